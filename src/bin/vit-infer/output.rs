//! What `vit-infer` prints on stdout: per image, the path and its top classes
//! as text or one JSON line (`path`, `top`, `provider`, or `path`, `error`);
//! for `--eval`, the accuracy and a confusion table, or one JSON object
//! (with `skipped`, the files left out).

use std::io::{self, Write};
use std::path::Path;

use vit::infer::{EvalData, Evaluation, ExecutionProvider, Prediction};

/// Text or JSON lines, and the label column width of text output.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Width of the label column (the longest label).
    pub label_width: usize,
}

/// Writes one image's prediction.
pub fn write_prediction(
    out: &mut impl Write,
    path: &Path,
    pred: &Prediction,
    provider: ExecutionProvider,
    format: Format,
) -> io::Result<()> {
    if format.json {
        let top: Vec<_> = pred
            .top
            .iter()
            .map(|s| serde_json::json!({ "label": s.label, "index": s.index, "probability": s.probability }))
            .collect();
        let line = serde_json::json!({ "path": vit::text::path(path), "top": top, "provider": provider });
        return writeln!(out, "{line}");
    }
    // Escaped: a file name or label may hold bytes that are not UTF-8, or control characters.
    writeln!(out, "{}", vit::text::path(path))?;
    for s in &pred.top {
        let label = vit::text::escape(&s.label);
        writeln!(out, "  {:<width$}  {:.4}", label, s.probability, width = format.label_width)?;
    }
    Ok(())
}

/// Writes the JSON line of a file that could not be classified.
pub fn write_json_error(out: &mut impl Write, path: &Path, error: &dyn std::fmt::Display) -> io::Result<()> {
    let line = serde_json::json!({ "path": vit::text::path(path), "error": error.to_string() });
    writeln!(out, "{line}")
}

/// Writes an evaluation: one JSON object, or the accuracy line and the confusion table.
pub fn write_evaluation(
    out: &mut impl Write,
    set: &EvalData,
    eval: &Evaluation,
    labels: &[String],
    provider: ExecutionProvider,
    json: bool,
) -> io::Result<()> {
    if json {
        let line = serde_json::json!({
            "accuracy": eval.accuracy,
            "total": eval.total,
            "labels": labels,
            "confusion_matrix": eval.confusion,
            "skipped": skipped(set, eval),
            "provider": provider,
        });
        return writeln!(out, "{line}");
    }
    let correct = eval.confusion.correct();
    writeln!(out, "accuracy {:.4} ({correct}/{} correct) on {}", eval.accuracy, eval.total, set.description)?;
    writeln!(out, "confusion matrix (rows: true class, columns: predicted class):")?;
    write!(out, "{}", confusion_table(labels, &eval.confusion.matrix))
}

/// Files left out of an evaluation: skipped when the folder was read, and
/// when their batch was decoded.
pub fn skipped(set: &EvalData, eval: &Evaluation) -> usize {
    set.data.skipped.len() + eval.skipped.len()
}

/// A text table with a header row of column numbers and one row per true class.
pub fn confusion_table(labels: &[String], confusion: &[Vec<u64>]) -> String {
    let labels: Vec<String> = labels.iter().map(|l| vit::text::escape(l)).collect();
    let name_w = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let max = confusion.iter().flatten().copied().max().unwrap_or(0);
    let cell_w = max.to_string().len().max(labels.len().to_string().len()).max(3);
    let mut s = format!("{:>w$}  ", "", w = name_w + 4);
    for j in 0..labels.len() {
        s += &format!(" {:>cell_w$}", format!("[{j}]"), cell_w = cell_w + 2);
    }
    s.push('\n');
    for (i, row) in confusion.iter().enumerate() {
        s += &format!("[{i}] {:<name_w$}  ", labels.get(i).map(String::as_str).unwrap_or(""));
        for v in row {
            s += &format!(" {v:>w$}", w = cell_w + 2);
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_table_aligns_rows_and_columns() {
        let labels: Vec<String> = ["cat", "T-shirt/top", "b"].map(String::from).to_vec();
        let table = confusion_table(&labels, &[vec![12, 0, 3], vec![1, 1500, 0], vec![0, 0, 7]]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "ragged:\n{table}");
        assert!(lines[2].starts_with("[1] T-shirt/top") && lines[2].ends_with("0"), "{table}");
        assert!(lines[0].trim_start().starts_with("[0]"), "{table}");
    }

    #[test]
    fn json_lines_name_the_provider_in_lowercase() {
        let pred = Prediction { path: None, top: vec![] };
        let mut out = Vec::new();
        let format = Format { json: true, label_width: 0 };
        write_prediction(&mut out, Path::new("a.png"), &pred, ExecutionProvider::Cpu, format).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({ "path": "a.png", "top": [], "provider": "cpu" }));
    }
}
