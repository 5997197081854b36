//! Collects results and prints them as a Markdown table.

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// Our figure.
    pub ours: String,
    /// The baseline figure(s).
    pub baseline: String,
    /// The compared quantity (ratio, overhead, growth), already formatted.
    pub comparison: String,
    /// The target, as text.
    pub target: String,
    /// Whether the target is met (`None`: reported only).
    pub met: Option<bool>,
}

/// All rows of one run.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Adds a row and prints it at once (long runs show progress).
    pub fn add(&mut self, row: Row) {
        eprintln!(
            "  {}: ours {} | baseline {} | {} | target {} {}",
            row.scenario,
            row.ours,
            row.baseline,
            row.comparison,
            row.target,
            match row.met {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "",
            }
        );
        self.rows.push(row);
    }

    /// The table, with machine facts above it.
    pub fn markdown(&self, machine: &[(String, String)]) -> String {
        let mut out = String::from("| Machine | |\n|---|---|\n");
        for (k, v) in machine {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out.push_str("\n| Scenario | grasp-server | Baseline | Comparison | Target | Met |\n|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.scenario, r.ours, r.baseline, r.comparison, r.target, met
            ));
        }
        out
    }
}
