//! What `berth up` shows. On a terminal: a table of the objects and their state, redrawn in
//! place, with messages (applies, warnings) scrolling above it. Otherwise: one plain line
//! per change, for logs and scripts.

use std::collections::BTreeMap;
use std::io::Write;

/// One object's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `shop/deployment.apps/web`.
    pub name: String,
    /// Named by a manifest (rather than made by a controller, as a Deployment's pods are).
    pub applied: bool,
    pub ready: bool,
    pub state: String,
}

/// The terminal output of one `berth up`.
pub struct View {
    live: bool,
    /// Lines of the table now on screen (live mode).
    drawn: usize,
    /// The rows last shown.
    last: Vec<Row>,
    /// Plain mode: the state last printed per object.
    printed: BTreeMap<String, (bool, String)>,
}

impl View {
    pub fn new(live: bool) -> View {
        View {
            live,
            drawn: 0,
            last: Vec::new(),
            printed: BTreeMap::new(),
        }
    }

    /// Prints one message line (above the table on a terminal).
    pub fn message(&mut self, text: &str) {
        self.clear();
        println!("{text}");
        let _ = std::io::stdout().flush();
    }

    /// Removes the table from the screen, so the next output starts where it began.
    pub fn clear(&mut self) {
        if self.live && self.drawn > 0 {
            // Up `drawn` lines, then erase to the end of the screen.
            print!("\x1b[{}A\x1b[J", self.drawn);
            let _ = std::io::stdout().flush();
            self.drawn = 0;
        }
    }

    /// Shows the rows: redraws the table, or prints the lines that changed.
    pub fn show(&mut self, rows: &[Row]) {
        if self.live {
            if self.drawn > 0 && rows == self.last.as_slice() {
                return;
            }
            self.clear();
            let table = table(rows);
            print!("{table}");
            let _ = std::io::stdout().flush();
            self.drawn = table.lines().count();
        } else {
            for line in changed_lines(&mut self.printed, rows) {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
        }
        self.last = rows.to_vec();
    }
}

/// The lines of a plain view for the rows whose state changed since `printed`, updating it.
pub fn changed_lines(printed: &mut BTreeMap<String, (bool, String)>, rows: &[Row]) -> Vec<String> {
    let mut lines = Vec::new();
    for row in rows {
        let now = (row.ready, row.state.clone());
        if printed.get(&row.name) != Some(&now) {
            lines.push(format!("{} {}: {}", mark(row.ready), row.name, row.state));
            printed.insert(row.name.clone(), now);
        }
    }
    let gone: Vec<String> = printed
        .keys()
        .filter(|name| !rows.iter().any(|r| &r.name == *name))
        .cloned()
        .collect();
    for name in gone {
        lines.push(format!("- {name}: gone"));
        printed.remove(&name);
    }
    lines
}

fn mark(ready: bool) -> &'static str {
    if ready { "ready" } else { "wait " }
}

/// The table a terminal shows: OBJECT, READY, STATE, and a summary line.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    let mut out = format!("{:<width$}  READY  STATE\n", "OBJECT");
    for row in rows {
        out.push_str(&format!(
            "{:<width$}  {:<5}  {}\n",
            row.name,
            if row.ready { "yes" } else { "no" },
            row.state
        ));
    }
    let applied = rows.iter().filter(|r| r.applied).count();
    let ready = rows.iter().filter(|r| r.applied && r.ready).count();
    out.push_str(&format!(
        "{ready}/{applied} objects Ready · Ctrl-C stops berth\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, ready: bool, state: &str) -> Row {
        Row {
            name: name.into(),
            applied: true,
            ready,
            state: state.into(),
        }
    }

    #[test]
    fn the_plain_view_prints_only_what_changed() {
        let mut printed = BTreeMap::new();
        let first = [
            row("shop/pod/a", false, "Pending"),
            row("shop/pod/b", true, "Running"),
        ];
        assert_eq!(changed_lines(&mut printed, &first).len(), 2);
        assert!(changed_lines(&mut printed, &first).is_empty());
        let second = [row("shop/pod/a", true, "Running")];
        assert_eq!(
            changed_lines(&mut printed, &second),
            ["ready shop/pod/a: Running", "- shop/pod/b: gone"]
        );
    }

    #[test]
    fn the_table_counts_ready_applied_objects() {
        let t = table(&[
            row("shop/pod/a", true, "Running"),
            row("shop/svc/web", false, "x"),
        ]);
        assert!(t.starts_with("OBJECT"), "{t}");
        assert!(t.contains("1/2 objects Ready"), "{t}");
    }
}
