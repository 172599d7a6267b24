//! What `berth up` shows. On a terminal: the objects and their state, redrawn in place by
//! `indicatif`, with progress bars while images are checked or pulled and while Deployments
//! roll out, and messages (applies, warnings) scrolling above. Otherwise: one plain line per
//! change, for logs and scripts.

use std::collections::BTreeMap;
use std::io::Write;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::ready::ImagePhase;

/// One object's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `shop/deployment.apps/web`.
    pub name: String,
    /// Named by a manifest (rather than made by a controller, as a Deployment's pods are).
    pub applied: bool,
    pub ready: bool,
    pub state: String,
    /// (done, of) while work is under way: a Deployment rolling out.
    pub progress: Option<(u64, u64)>,
}

/// One image the cluster's pods run, and how many of their containers wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub image: String,
    pub phase: ImagePhase,
    pub containers: usize,
}

/// Folds `(image, phase)` pairs of every container into one row per image: an image counts as
/// present once any container got it, failed when one failed and none got it.
pub fn image_rows(pairs: impl IntoIterator<Item = (String, ImagePhase)>) -> Vec<ImageRow> {
    let mut by_image: BTreeMap<String, ImageRow> = BTreeMap::new();
    for (image, phase) in pairs {
        let row = by_image.entry(image.clone()).or_insert(ImageRow {
            image,
            phase: ImagePhase::Pending,
            containers: 0,
        });
        row.containers += 1;
        // Present wins over Failed, Failed over Pending (the enum's order).
        if phase > row.phase {
            row.phase = phase;
        }
    }
    by_image.into_values().collect()
}

/// What one line of the live view draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gauge {
    /// Text only.
    Text,
    /// A bar filled `done` of `of`.
    Bar { done: u64, of: u64 },
    /// A spinner: under way, with no count to show.
    Spinner,
}

/// One line of the live view: `key` identifies it between redraws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub key: String,
    pub prefix: String,
    pub gauge: Gauge,
    pub message: String,
}

/// The lines of the live view, top to bottom: the images while any is not present yet (a bar
/// of those present, a spinner per image still checked or pulled), a header, one line per
/// object (a bar for a Deployment rolling out), and a summary.
pub fn screen(rows: &[Row], images: &[ImageRow]) -> Vec<Line> {
    let width = rows
        .iter()
        .map(|r| r.name.len())
        .chain(images.iter().map(|i| i.image.len() + 2))
        .max()
        .unwrap_or(6)
        .max(6);
    let mut lines = Vec::new();
    let present = images
        .iter()
        .filter(|i| i.phase == ImagePhase::Present)
        .count();
    if present < images.len() {
        lines.push(Line {
            key: "images".into(),
            prefix: format!("{:<width$}       ", "IMAGES"),
            gauge: Gauge::Bar {
                done: present as u64,
                of: images.len() as u64,
            },
            message: "present on this node".into(),
        });
        for image in images.iter().filter(|i| i.phase != ImagePhase::Present) {
            let waiting = match image.containers {
                1 => "1 container waits".to_string(),
                n => format!("{n} containers wait"),
            };
            let (gauge, message) = match &image.phase {
                ImagePhase::Failed(why) => (Gauge::Text, format!("failed: {why} ({waiting})")),
                _ => (Gauge::Spinner, format!("checking or pulling ({waiting})")),
            };
            lines.push(Line {
                key: format!("image {}", image.image),
                prefix: format!("  {:<w$}       ", image.image, w = width - 2),
                gauge,
                message,
            });
        }
    }
    lines.push(Line {
        key: "header".into(),
        prefix: format!("{:<width$}  READY  STATE", "OBJECT"),
        gauge: Gauge::Text,
        message: String::new(),
    });
    for row in rows {
        let gauge = match row.progress {
            Some((done, of)) if !row.ready => Gauge::Bar { done, of },
            _ => Gauge::Text,
        };
        lines.push(Line {
            key: row.name.clone(),
            prefix: format!(
                "{:<width$}  {:<5}",
                row.name,
                if row.ready { "yes" } else { "no" }
            ),
            gauge,
            message: row.state.clone(),
        });
    }
    let applied = rows.iter().filter(|r| r.applied).count();
    let ready = rows.iter().filter(|r| r.applied && r.ready).count();
    lines.push(Line {
        key: "summary".into(),
        prefix: format!("{ready}/{applied} objects Ready · Ctrl-C stops berth"),
        gauge: Gauge::Text,
        message: String::new(),
    });
    lines
}

fn style(gauge: &Gauge) -> ProgressStyle {
    let template = match gauge {
        Gauge::Text => "{prefix}  {msg}",
        Gauge::Bar { .. } => "{prefix}  [{bar:20.green/dim}] {pos}/{len} {msg}",
        Gauge::Spinner => "{prefix}  {spinner:.cyan} {msg}",
    };
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
}

/// The bars on a terminal, one per [`Line`].
struct Live {
    multi: MultiProgress,
    bars: Vec<(Line, ProgressBar)>,
}

impl Live {
    fn new(target: ProgressDrawTarget) -> Live {
        Live {
            multi: MultiProgress::with_draw_target(target),
            bars: Vec::new(),
        }
    }

    fn draw(&mut self, lines: Vec<Line>) {
        let same_keys = self.bars.len() == lines.len()
            && self
                .bars
                .iter()
                .zip(&lines)
                .all(|((l, _), n)| l.key == n.key);
        if !same_keys {
            self.remove_all();
            for line in lines {
                let bar = self.multi.add(ProgressBar::hidden());
                bar.set_style(style(&line.gauge));
                update(&bar, &line);
                self.bars.push((line, bar));
            }
            return;
        }
        for ((old, bar), line) in self.bars.iter_mut().zip(lines) {
            if std::mem::discriminant(&old.gauge) != std::mem::discriminant(&line.gauge) {
                bar.set_style(style(&line.gauge));
            }
            if *old != line || line.gauge == Gauge::Spinner {
                update(bar, &line);
            }
            *old = line;
        }
    }

    fn remove_all(&mut self) {
        for (_, bar) in self.bars.drain(..) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}

fn update(bar: &ProgressBar, line: &Line) {
    if let Gauge::Bar { done, of } = line.gauge {
        bar.set_length(of);
        bar.set_position(done);
    }
    bar.set_prefix(line.prefix.clone());
    bar.set_message(line.message.clone());
    // Moves a spinner on by one frame per redraw; draws the others.
    bar.tick();
}

/// The terminal output of one `berth up`.
pub struct View {
    live: Option<Live>,
    /// Plain mode: the state last printed per object.
    printed: BTreeMap<String, (bool, String)>,
}

impl View {
    pub fn new(live: bool) -> View {
        View {
            live: live.then(|| Live::new(ProgressDrawTarget::stdout())),
            printed: BTreeMap::new(),
        }
    }

    /// Prints one message line (above the bars on a terminal).
    pub fn message(&mut self, text: &str) {
        match &self.live {
            Some(live) if !live.bars.is_empty() => {
                let _ = live.multi.println(text);
            }
            _ => {
                println!("{text}");
                let _ = std::io::stdout().flush();
            }
        }
    }

    /// Removes the bars from the screen, so the next output starts where they began.
    pub fn clear(&mut self) {
        if let Some(live) = &mut self.live {
            live.remove_all();
        }
    }

    /// Shows the rows: redraws the bars, or prints the lines that changed.
    pub fn show(&mut self, rows: &[Row], images: &[ImageRow]) {
        match &mut self.live {
            Some(live) => live.draw(screen(rows, images)),
            None => {
                for line in changed_lines(&mut self.printed, rows) {
                    println!("{line}");
                }
                let _ = std::io::stdout().flush();
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, ready: bool, state: &str) -> Row {
        Row {
            name: name.into(),
            applied: true,
            ready,
            state: state.into(),
            progress: None,
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
    fn the_screen_counts_ready_applied_objects_and_bars_a_rollout() {
        let mut web = row("shop/deployment.apps/web", false, "rolled out 1/3");
        web.progress = Some((1, 3));
        let lines = screen(&[row("shop/pod/a", true, "Running"), web], &[]);
        let keys: Vec<&str> = lines.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "header",
                "shop/pod/a",
                "shop/deployment.apps/web",
                "summary"
            ]
        );
        assert_eq!(lines[2].gauge, Gauge::Bar { done: 1, of: 3 });
        assert_eq!(lines[1].gauge, Gauge::Text);
        assert!(
            lines[3].prefix.starts_with("1/2 objects Ready"),
            "{:?}",
            lines[3]
        );
    }

    #[test]
    fn images_show_until_every_one_is_present() {
        let rows = image_rows([
            ("busybox:1.36".to_string(), ImagePhase::Present),
            ("busybox:1.36".to_string(), ImagePhase::Pending),
            ("app:2".to_string(), ImagePhase::Pending),
            ("app:2".to_string(), ImagePhase::Pending),
            ("gone:1".to_string(), ImagePhase::Failed("not found".into())),
        ]);
        assert_eq!(rows.len(), 3);
        let lines = screen(&[], &rows);
        assert_eq!(lines[0].gauge, Gauge::Bar { done: 1, of: 3 });
        assert_eq!(lines[1].key, "image app:2");
        assert_eq!(lines[1].gauge, Gauge::Spinner);
        assert!(
            lines[1].message.contains("2 containers wait"),
            "{:?}",
            lines[1]
        );
        assert_eq!(lines[2].gauge, Gauge::Text);
        assert!(
            lines[2].message.starts_with("failed: not found"),
            "{:?}",
            lines[2]
        );
        let all = image_rows([("busybox:1.36".to_string(), ImagePhase::Present)]);
        assert_eq!(
            screen(&[], &all)[0].key,
            "header",
            "no image lines once all are present"
        );
    }

    #[test]
    fn the_terminal_draws_a_rollout_as_a_bar_and_messages_above_it() {
        let term = indicatif::InMemoryTerm::new(10, 100);
        let mut view = View {
            live: Some(Live::new(ProgressDrawTarget::term_like(Box::new(
                term.clone(),
            )))),
            printed: BTreeMap::new(),
        };
        let mut web = row("shop/deployment.apps/web", false, "rolled out 2/3");
        web.progress = Some((2, 3));
        view.show(&[web.clone()], &[]);
        view.message("shop/deployment.apps/web created");
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines[0], "shop/deployment.apps/web created", "{screen}");
        assert!(lines[1].starts_with("OBJECT"), "{screen}");
        assert!(
            lines[2].contains("[=============>      ] 2/3 rolled out 2/3"),
            "{screen}"
        );
        web.ready = true;
        web.progress = None;
        web.state = "rolled out 3/3".into();
        view.show(&[web], &[]);
        let screen = term.contents();
        assert!(screen.contains("yes    rolled out 3/3"), "{screen}");
        assert!(
            !screen.contains('['),
            "the bar is gone once rolled out: {screen}"
        );
    }
}
