//! Classification metrics shared by training (`vit-train`'s evaluation) and
//! inference (`vit-infer --eval`), so both count and report the same way.

use serde::{Deserialize, Serialize};

/// `matrix[true][predicted]` counts. Serialises as the bare matrix (a JSON
/// array of rows), the form `summary.json` and `vit-infer --json` write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Confusion {
    /// Rows: true class; columns: predicted class.
    pub matrix: Vec<Vec<u64>>,
}

impl Confusion {
    /// An all-zero `n` x `n` matrix.
    pub fn new(n: usize) -> Self {
        Self { matrix: vec![vec![0; n]; n] }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.matrix.len()
    }

    /// Counts one prediction (indices outside the matrix are ignored).
    pub fn add(&mut self, truth: usize, predicted: usize) {
        if let Some(cell) = self.matrix.get_mut(truth).and_then(|r| r.get_mut(predicted)) {
            *cell += 1;
        }
    }

    /// Number of predictions counted.
    pub fn total(&self) -> u64 {
        self.matrix.iter().flatten().sum()
    }

    /// Number of correct predictions (the diagonal).
    pub fn correct(&self) -> u64 {
        (0..self.matrix.len()).map(|i| self.matrix[i][i]).sum()
    }

    /// Fraction on the diagonal (0 when empty).
    pub fn accuracy(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            t => self.correct() as f64 / t as f64,
        }
    }

    /// CSV with a header row and column of labels.
    pub fn to_csv(&self, labels: &[String]) -> String {
        let mut out = String::from("true\\predicted");
        for l in labels {
            out.push(',');
            out.push_str(&crate::text::csv_cell(l));
        }
        out.push('\n');
        for (label, row) in labels.iter().zip(&self.matrix) {
            out.push_str(&crate::text::csv_cell(label));
            for v in row {
                out.push_str(&format!(",{v}"));
            }
            out.push('\n');
        }
        out
    }
}

/// Index of the first largest value (NaN never wins).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_accuracy_and_csv() {
        let mut c = Confusion::new(2);
        c.add(0, 0);
        c.add(0, 1);
        c.add(1, 1);
        c.add(1, 1);
        assert!((c.accuracy() - 0.75).abs() < 1e-12);
        assert_eq!(c.correct(), 3);
        assert_eq!(c.to_csv(&["a".into(), "b".into()]), "true\\predicted,a,b\na,1,1\nb,0,2\n");
    }

    #[test]
    fn confusion_serialises_as_the_bare_matrix() {
        let c = Confusion { matrix: vec![vec![1, 2], vec![3, 4]] };
        assert_eq!(serde_json::to_string(&c).unwrap(), "[[1,2],[3,4]]");
        assert_eq!(serde_json::from_str::<Confusion>("[[1,2],[3,4]]").unwrap(), c);
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
    }
}
