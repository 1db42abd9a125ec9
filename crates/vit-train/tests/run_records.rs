//! What a run folder records stays true: a run file cut short by a kill is an
//! error naming it (never defaults, never a lost history), a resume continues
//! on exactly the data the run trained on or says what changed, and no float
//! flag lets NaN switch a gate off. Each refusal leaves every file as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::*;
use common::coco5;

/// `fit --resume` of `run`, extended to `epochs`, no export.
fn resume(run: &Path, epochs: &str) -> Command {
    let mut c = bin();
    c.arg("--out").arg(run).args(["--resume", "--epochs", epochs, "--no-export"]);
    c
}

/// Writes `files` (a [`snapshot`]) back into `dir`, replacing what is there.
fn restore(dir: &Path, files: &std::collections::BTreeMap<PathBuf, Vec<u8>>) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn resume_refuses_an_empty_or_cut_short_run_file_by_name_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&cfg, &run, "1"));
    let good = snapshot(&run);
    let text = |name: &str| String::from_utf8(good[Path::new(name)].clone()).unwrap();
    let (config, options, metrics) = (text("config.toml"), text("run.json"), text("metrics.jsonl"));
    let last_line = metrics.trim_end().rfind('\n').unwrap() + 1;
    let cases = [
        ("config.toml", String::new(), "the file is empty"),
        ("config.toml", config[..config.find("[train]").unwrap()].to_string(), "it lacks train.epochs"),
        ("run.json", options[..options.len() / 2].to_string(), "malformed or incomplete"),
        ("run.json", String::new(), "malformed or incomplete"),
        ("metrics.jsonl", String::new(), "no record of epoch 1 of the 1 epochs"),
        ("metrics.jsonl", metrics[..last_line + 10].to_string(), "is not a record"),
    ];
    for (file, damaged, why) in cases {
        restore(&run, &good);
        std::fs::write(run.join(file), &damaged).unwrap();
        let before = snapshot(&run);
        let err = run_err(&mut resume(&run, "2"));
        assert!(err.contains(&run.join(file).display().to_string()) && err.contains(why), "{file}: {err}");
        assert!(err.contains("start a new run with another --out"), "{file}: {err}");
        assert_eq!(snapshot(&run), before, "{file}: a refused resume changed the run folder");
    }
    // The intact run resumes.
    restore(&run, &good);
    run_ok(&mut resume(&run, "2"));
    assert_eq!(summary(&run)["epochs"], 2);
}

/// `n` images of each of `classes` from COCO-5's training split, as `DIR/<class>/*.jpg`.
fn image_folder(dir: &Path, classes: &[&str], n: usize) {
    for class in classes {
        let src = coco5().join("train").join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for f in files.iter().take(n) {
            std::fs::copy(f, dir.join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn resume_continues_on_the_recorded_data_or_names_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let data = tmp.path().join("data");
    image_folder(&data, &["bus", "cat", "pizza"], 12);
    let run = tmp.path().join("run");
    // A relative --data is recorded as the folder it names.
    let mut first = bin();
    first.current_dir(tmp.path()).args(["--data", "data", "--out", "run", "--epochs", "1", "--no-export"]);
    run_ok(first.arg("--config").arg(&cfg));
    let options: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(options["data"], data.canonicalize().unwrap().display().to_string());
    assert_eq!(options["data_index"]["classes"], serde_json::json!(["bus", "cat", "pizza"]));
    let before = snapshot(&run);

    // One image more: the seeded split would be drawn again.
    let extra = data.join("cat/extra.jpg");
    std::fs::copy(data.join("bus").read_dir().unwrap().next().unwrap().unwrap().path(), &extra).unwrap();
    let err = run_err(&mut resume(&run, "2"));
    assert!(err.contains("is not what the run trained on") && err.contains("1 more image"), "{err}");
    assert_eq!(snapshot(&run), before);
    std::fs::remove_file(&extra).unwrap();

    // A renamed class folder: the labels would be mapped anew.
    std::fs::rename(data.join("cat"), data.join("kitten")).unwrap();
    let err = run_err(&mut resume(&run, "2"));
    assert!(err.contains(r#"gone: ["cat"], new: ["kitten"]"#), "{err}");
    assert_eq!(snapshot(&run), before, "labels.json and the rest stay as they were");
    std::fs::rename(data.join("kitten"), data.join("cat")).unwrap();

    // An unreadable entry: refused with the advice to pass --allow-skipped, which a resume then honours.
    std::os::unix::fs::symlink(tmp.path().join("nowhere.jpg"), data.join("bus/dangling.jpg")).unwrap();
    let err = run_err(&mut resume(&run, "2"));
    assert!(err.contains("dangling.jpg") && err.contains("--allow-skipped"), "{err}");
    assert_eq!(snapshot(&run), before);
    // From another working folder: the recorded absolute path is what is read.
    run_ok(resume(&run, "2").arg("--allow-skipped").current_dir(&run));
    assert_eq!(summary(&run)["epochs"], 2);
    assert_eq!(summary(&run)["skipped_files"], 1);
}

#[test]
fn an_old_run_json_without_a_data_record_resumes_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let run = tmp.path().join("run");
    run_ok(&mut quick(&cfg, &run, "1"));
    let path = run.join("run.json");
    let mut options: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    options.as_object_mut().unwrap().remove("data_index");
    std::fs::write(&path, serde_json::to_string_pretty(&options).unwrap()).unwrap();
    let out = run_ok(&mut resume(&run, "2"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not record its data"), "{stderr}");
    let options: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(options["data_index"]["train"]["digest"].is_string(), "recorded now: {options}");
}

#[test]
fn a_nan_threshold_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let cases: [&[&str]; 3] = [
        &["export", "--run", "RUN", "--quantize", "int8", "--max-accuracy-drop", "NaN"],
        &["export", "--run", "RUN", "--quantize", "int8", "--max-accuracy-drop", "inf"],
        &["shards", "--data", "RUN", "--out", "RUN/s", "--val-fraction", "NaN"],
    ];
    for args in cases {
        let args: Vec<String> = args.iter().map(|a| a.replace("RUN", &run.display().to_string())).collect();
        let err = run_err(Command::new(env!("CARGO_BIN_EXE_vit-train")).args(&args));
        let flag = &args[args.len() - 2];
        assert!(err.contains(flag.as_str()) && err.contains("not a finite number"), "{args:?}: {err}");
        assert!(std::fs::read_dir(&run).unwrap().next().is_none(), "{args:?} wrote into {}", run.display());
    }
}

#[test]
fn a_shard_set_is_complete_or_refused_by_name_and_has_one_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    image_folder(&data, &["bus", "cat", "pizza"], 8);
    let out = tmp.path().join("shards");
    let shards = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vit-train"));
        c.arg("shards").arg("--data").arg(&data).arg("--out").arg(&out).args(["--shard-size", "24K"]).args(args);
        c
    };
    run_ok(&mut shards(&[]));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("shards.json")).unwrap()).unwrap();
    assert_eq!(manifest["complete"], true);
    let listed = manifest["shards"].as_array().unwrap();
    assert!(listed.len() > 2, "{manifest}");
    assert_eq!(listed.iter().map(|e| e["samples"].as_u64().unwrap()).sum::<u64>(), 24);
    let prep = vit::Preprocessor::from_config(&vit::ViTConfig::default());
    let load = || vit::data::load_splits(&out, &prep, &Default::default()).map(|s| s.train.len() + s.val.len());
    assert_eq!(load().unwrap(), 24);
    let good = snapshot(&out);
    let first = out.join(listed[0]["file"].as_str().unwrap());

    // What a writer killed partway leaves: refused by fit, naming the list and the fix.
    std::fs::write(out.join("shards.json"), r#"{"complete": false}"#).unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let err = run_err(bin().arg("--config").arg(&cfg).arg("--data").arg(&out).arg("--out").arg(tmp.path().join("run")));
    assert!(err.contains("shards.json") && err.contains("did not finish") && err.contains("--force"), "{err}");
    restore(&out, &good);
    // A listed shard lost, cut short, or a stray one added.
    let bytes = std::fs::read(&first).unwrap();
    std::fs::remove_file(&first).unwrap();
    assert!(load().unwrap_err().to_string().contains("is listed but missing"));
    std::fs::write(&first, &bytes[..bytes.len() - 1024]).unwrap();
    assert!(load().unwrap_err().to_string().contains("bytes, the list says"));
    restore(&out, &good);
    std::fs::write(out.join("train-999999.tar"), &bytes).unwrap();
    assert!(load().unwrap_err().to_string().contains("train-999999.tar is not one of the set's shards"));
    std::fs::remove_file(out.join("train-999999.tar")).unwrap();
    assert_eq!(load().unwrap(), 24);

    // One writer: while another process holds the folder, `shards --force` is refused and changes nothing.
    let held = vit_train::run::lock::RunLock::acquire(&out).unwrap();
    let err = run_err(&mut shards(&["--force"]));
    assert!(err.contains("in use") && err.contains(&format!("PID {}", std::process::id())), "{err}");
    assert_eq!(snapshot(&out), good);
    drop(held);
    run_ok(&mut shards(&["--force"]));
    assert_eq!(load().unwrap(), 24);
}
