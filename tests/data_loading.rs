//! Data sets on tiny generated folders and IDX files: every layout and every
//! kind of bad input the loader promises to handle.

use std::io::Write;
use std::path::Path;

use image::{DynamicImage, GrayImage, RgbImage, RgbaImage};
use vit::config::Resize;
use vit::data::{load_folder, load_splits, DataError, LoadOptions, SourceKind};
use vit::Preprocessor;

fn prep(side: usize, channels: usize) -> Preprocessor {
    Preprocessor {
        image_size: side,
        channels,
        mean: vec![0.5; channels],
        std: vec![0.5; channels],
        resize: Resize::Bilinear,
        max_file_bytes: vit::preprocess::DEFAULT_MAX_IMAGE_BYTES,
    }
}

fn save(img: DynamicImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// cat: RGB png + gray jpg + RGBA png (other size); dog: RGB bmp + corrupt jpg + a text file.
fn mixed_folder(root: &Path) {
    save(DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, image::Rgb([255, 0, 0]))), &root.join("cat/a.png"));
    save(DynamicImage::ImageLuma8(GrayImage::from_pixel(8, 8, image::Luma([128]))), &root.join("cat/b.jpg"));
    save(DynamicImage::ImageRgba8(RgbaImage::from_pixel(13, 5, image::Rgba([0, 255, 0, 10]))), &root.join("cat/c.png"));
    save(DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, image::Rgb([0, 0, 255]))), &root.join("dog/d.bmp"));
    std::fs::write(root.join("dog/broken.jpg"), b"\xff\xd8 this is not really a jpeg").unwrap();
    std::fs::write(root.join("dog/notes.txt"), b"ignored: not an image extension").unwrap();
}

#[test]
fn image_folder_with_mixed_formats_and_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    mixed_folder(dir.path());
    let (classes, data) = load_folder(dir.path(), &prep(8, 3)).unwrap();
    assert_eq!(classes, vec!["cat", "dog"]);
    assert_eq!(data.labels, vec![0, 0, 0, 1]);
    assert_eq!(data.skipped.len(), 1, "the corrupt jpg is skipped, the txt ignored");
    assert!(data.skipped[0].path.ends_with("dog/broken.jpg"));
    assert_eq!(data.image_len, 3 * 64);
    // RGB red: channel planes 255, 0, 0.
    let red = data.image(0);
    assert!(red[..64].iter().all(|&v| v == 255) && red[64..].iter().all(|&v| v == 0));
    // Gray 128 repeated on 3 channels (JPEG may be off by a little).
    assert!(data.image(1).iter().all(|&v| (126..=130).contains(&v)));
    // RGBA 13x5 resized to 8x8, alpha dropped: pure green.
    let green = data.image(2);
    assert!(green[..64].iter().all(|&v| v == 0) && green[64..128].iter().all(|&v| v == 255));
}

#[test]
fn grayscale_models_get_one_channel() {
    let dir = tempfile::tempdir().unwrap();
    mixed_folder(dir.path());
    let (_, data) = load_folder(dir.path(), &prep(4, 1)).unwrap();
    assert_eq!(data.image_len, 16);
    assert_eq!(data.pixels.len(), 4 * 16);
}

#[test]
fn empty_class_missing_folder_and_no_classes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    mixed_folder(dir.path());
    std::fs::create_dir_all(dir.path().join("empty_class")).unwrap();
    let err = load_folder(dir.path(), &prep(8, 3)).unwrap_err();
    assert!(matches!(err, DataError::EmptyClass(ref p) if p.ends_with("empty_class")), "{err}");

    let err = load_folder(&dir.path().join("nope"), &prep(8, 3)).unwrap_err();
    assert!(matches!(err, DataError::NotADir(_)) && err.to_string().contains("nope"), "{err}");

    let flat = tempfile::tempdir().unwrap();
    std::fs::write(flat.path().join("x.jpg"), b"x").unwrap();
    assert!(matches!(load_folder(flat.path(), &prep(8, 3)).unwrap_err(), DataError::NoClasses(_)));
}

#[test]
fn nothing_decodable_is_an_error_not_an_empty_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/1.png"), b"garbage").unwrap();
    let err = load_folder(dir.path(), &prep(8, 3)).unwrap_err();
    assert!(matches!(err, DataError::NothingUsable { skipped: 1, .. }), "{err}");
}

#[test]
fn train_val_folders_and_seeded_split() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        for class in ["b", "a"] {
            for i in 0..3 {
                let v = if class == "a" { 10 } else { 200 };
                save(
                    DynamicImage::ImageLuma8(GrayImage::from_pixel(4, 4, image::Luma([v]))),
                    &dir.path().join(format!("{split}/{class}/{i}.png")),
                );
            }
        }
    }
    let s = load_splits(dir.path(), &prep(4, 1), &LoadOptions::default()).unwrap();
    assert_eq!(s.source, SourceKind::FolderSplits);
    assert_eq!((s.train.len(), s.val.len()), (6, 6));
    assert_eq!(s.classes, vec!["a", "b"]);
    assert!(s.train.image(0).iter().all(|&v| v == 10), "class a (sorted first) is label 0");

    // Without train/val: a seeded per-class split, reproducible, different for another seed.
    let flat = dir.path().join("train");
    let opts = |seed| LoadOptions { val_fraction: 1.0 / 3.0, seed, ..Default::default() };
    let s1 = load_splits(&flat, &prep(4, 1), &opts(1)).unwrap();
    let s2 = load_splits(&flat, &prep(4, 1), &opts(1)).unwrap();
    assert_eq!(s1.source, SourceKind::FolderSeededSplit);
    assert_eq!((s1.train.len(), s1.val.len()), (4, 2));
    assert_eq!(s1.val.sources, s2.val.sources);
    assert_eq!(s1.val.class_counts(2), vec![1, 1]);

    let capped =
        load_splits(dir.path(), &prep(4, 1), &LoadOptions { max_per_class: Some(2), ..Default::default() }).unwrap();
    assert_eq!((capped.train.len(), capped.val.len()), (4, 4));
}

fn idx_bytes(ndim_sizes: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, ndim_sizes.len() as u8];
    for s in ndim_sizes {
        out.extend_from_slice(&s.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn idx_files_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<u8> = (0..3u8).flat_map(|i| vec![i * 100; 4]).collect(); // three 2x2 images
    std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gz(&idx_bytes(&[3, 2, 2], &images))).unwrap();
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx_bytes(&[3], &[9, 0, 9])).unwrap();
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), idx_bytes(&[1, 2, 2], &[7; 4])).unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), gz(&idx_bytes(&[1], &[3]))).unwrap();
    let s = load_splits(dir.path(), &prep(2, 1), &LoadOptions::default()).unwrap();
    assert_eq!(s.source, SourceKind::Idx);
    assert_eq!(s.classes.len(), 10);
    assert_eq!(s.classes[9], "Ankle boot");
    assert_eq!(s.train.labels, vec![9, 0, 9]);
    assert_eq!(s.train.image(2), &[200, 200, 200, 200]);
    assert_eq!((s.val.labels.clone(), s.val.image(0).to_vec()), (vec![3], vec![7; 4]));
    // 3-channel 4x4 models get the same pixels resized and repeated.
    let s3 = load_splits(dir.path(), &prep(4, 3), &LoadOptions::default()).unwrap();
    assert_eq!(s3.train.image_len, 48);
    assert!(s3.train.image(1).iter().all(|&v| v == 100));
    let capped =
        load_splits(dir.path(), &prep(2, 1), &LoadOptions { max_per_class: Some(1), ..Default::default() }).unwrap();
    assert_eq!(capped.train.labels, vec![9, 0]);
}

#[test]
fn malformed_idx_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), idx_bytes(&[3, 2, 2], &[0; 5])).unwrap();
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx_bytes(&[3], &[0; 3])).unwrap();
    let err = load_splits(dir.path(), &prep(2, 1), &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("train-images-idx3-ubyte") && err.contains("data bytes"), "{err}");
}

/// Tests run as root, where permission bits do not stop reads: a dangling link
/// and a link loop are entries the folder walk cannot read whoever runs it.
fn folder_with_unreadable_entries(root: &Path) {
    mixed_folder(root);
    std::os::unix::fs::symlink(root.join("no-such-file.png"), root.join("cat/ghost.png")).unwrap();
    std::os::unix::fs::symlink(root.join("dog"), root.join("dog/loop")).unwrap();
}

#[test]
fn unreadable_entries_fail_training_unless_allowed_and_are_always_counted() {
    let dir = tempfile::tempdir().unwrap();
    folder_with_unreadable_entries(dir.path());
    let err = load_splits(dir.path(), &prep(8, 3), &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Unreadable { count: 2, .. }), "{msg}");
    assert!(msg.contains("ghost.png") && msg.contains("loop") && msg.contains("allow skipping"), "{msg}");

    let opts = LoadOptions { allow_unreadable: true, ..Default::default() };
    let s = load_splits(dir.path(), &prep(8, 3), &opts).unwrap();
    assert_eq!(s.train.len() + s.val.len(), 4, "every readable image is kept");
    assert_eq!(s.skipped(), 3, "two unreadable entries and the corrupt jpg");
    let ghost = s.train.skipped.iter().find(|k| k.path.ends_with("cat/ghost.png")).expect("ghost.png counted");
    assert!(!ghost.reason.is_empty());

    // Evaluation sets skip and count them alike.
    let (_, data) = load_folder(dir.path(), &prep(8, 3)).unwrap();
    assert_eq!((data.len(), data.skipped.len()), (4, 3));
}

/// `root/<split>/<class>/0.png` for each split and class.
fn split_folder(root: &Path, splits: &[&str], classes: &[&str]) {
    for split in splits {
        for class in classes {
            save(
                DynamicImage::ImageLuma8(GrayImage::from_pixel(4, 4, image::Luma([7]))),
                &root.join(format!("{split}/{class}/0.png")),
            );
        }
    }
}

#[test]
fn train_beside_test_valid_or_validation_are_splits_never_classes() {
    for eval in ["test", "valid", "validation"] {
        let dir = tempfile::tempdir().unwrap();
        split_folder(dir.path(), &["train", eval], &["cat", "dog", "fox"]);
        let s = load_splits(dir.path(), &prep(4, 1), &LoadOptions::default()).unwrap();
        assert_eq!(s.source, SourceKind::FolderSplits, "{eval}");
        assert_eq!(s.classes, vec!["cat", "dog", "fox"], "{eval}: split names are not classes");
        assert!(s.val.sources.iter().all(|p| p.file().starts_with(dir.path().join(eval))), "{eval}");
    }
    // val/ wins over test/ when both exist.
    let dir = tempfile::tempdir().unwrap();
    split_folder(dir.path(), &["train", "val", "test"], &["cat", "dog"]);
    assert_eq!(
        vit::data::Layout::detect(dir.path()).unwrap(),
        vit::data::Layout::Splits { train: dir.path().join("train"), val: dir.path().join("val") }
    );
}

#[test]
fn split_folders_without_a_usable_pair_say_how_folders_are_read() {
    let dir = tempfile::tempdir().unwrap();
    split_folder(dir.path(), &["train"], &["cat", "dog"]);
    let err = load_splits(dir.path(), &prep(4, 1), &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::NoEvalSplit(_)), "{msg}");
    assert!(msg.contains("no evaluation split") && msg.contains("val/, valid/, validation/, test/"), "{msg}");
    assert!(msg.contains("DIR/<class>/*"), "says how a folder is read: {msg}");

    for (splits, found) in [(&["test", "val"][..], "val/, test/"), (&["val"][..], "val/")] {
        let dir = tempfile::tempdir().unwrap();
        split_folder(dir.path(), splits, &["cat", "dog"]);
        let msg = load_splits(dir.path(), &prep(4, 1), &LoadOptions::default()).unwrap_err().to_string();
        assert!(msg.contains(found) && msg.contains("no train/") && msg.contains("never read as classes"), "{msg}");
    }
    // A split name among class folders is not a class either.
    let dir = tempfile::tempdir().unwrap();
    split_folder(dir.path(), &["cat", "dog", "test"], &["x"]);
    let msg = load_splits(dir.path(), &prep(4, 1), &LoadOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("test/") && msg.contains("no train/"), "{msg}");
}

#[test]
fn a_class_whose_every_file_fails_to_decode_is_an_error_naming_it() {
    for layout in ["flat", "splits"] {
        let dir = tempfile::tempdir().unwrap();
        let root = if layout == "flat" { dir.path().to_path_buf() } else { dir.path().join("train") };
        if layout == "splits" {
            split_folder(dir.path(), &["val"], &["cat", "dog"]);
        }
        for i in 0..3 {
            save(
                DynamicImage::ImageLuma8(GrayImage::from_pixel(4, 4, image::Luma([9]))),
                &root.join(format!("cat/{i}.png")),
            );
            std::fs::create_dir_all(root.join("dog")).unwrap();
            std::fs::write(root.join(format!("dog/{i}.png")), b"not a png").unwrap();
        }
        let err = load_splits(dir.path(), &prep(4, 1), &LoadOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DataError::ClassUnusable { files: 3, ref dir } if dir == &root.join("dog")),
            "{layout}: {msg}"
        );
        assert!(msg.contains("none of its 3 image file(s) could be decoded"), "{msg}");
    }
}
