//! `[[static]]`: directories of built files (a frontend's `dist/`) the gate serves at a path,
//! so that the frontends, the gate's API and the backend's routes share one origin and a
//! clinic deploys one binary where the platform branch needed its own nginx.
//!
//! A mount answers `GET` and `HEAD` for the paths under it that neither the gate's own
//! endpoints nor a configured route answer: it never hides them. `check-config` refuses a
//! mount whose own root those would answer, since it could then never serve its index.

use serde::Deserialize;
use std::path::PathBuf;

/// `[[static]]` as written.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct StaticSection {
    /// The path the directory is served at (`/`, `/account/`).
    pub at: String,
    /// The directory of built files.
    pub dir: String,
    /// A history-mode single-page app: a page navigation to a path with no file gets this
    /// file of `dir` (`index.html`) instead of a 404.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// One validated mount.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The line of `[[static]]` in the file, for messages.
    pub line: usize,
    /// The path prefix, ending with `/`.
    pub at: String,
    pub dir: PathBuf,
    /// The fallback file's name inside `dir`, if the app uses history mode.
    pub fallback: Option<String>,
}

impl Mount {
    /// Checks a section: a plain path (`/` added at its end), an existing directory, and a
    /// fallback that is a file name inside it.
    pub fn validate(s: &StaticSection, line: usize) -> Result<Mount, Vec<String>> {
        let mut problems = Vec::new();
        let plain = s.at.starts_with('/')
            && !s.at.contains(['{', '}', '?', '#', '\\', '%'])
            && s.at.split('/').all(|seg| seg != "." && seg != "..");
        if !plain {
            problems.push(format!(
                "static.at: `{}` must be a plain path such as / or /account/ (no parameters, no dot segments)",
                s.at
            ));
        }
        let at = if s.at.ends_with('/') {
            s.at.clone()
        } else {
            format!("{}/", s.at)
        };
        let dir = PathBuf::from(&s.dir);
        if !dir.is_dir() {
            problems.push(format!(
                "static.dir: `{}` is not a directory (the frontend's built files, such as its dist/)",
                s.dir
            ));
        }
        if let Some(f) = &s.fallback {
            let one_name = !f.is_empty() && !f.contains(['/', '\\']) && f != "." && f != "..";
            if !one_name {
                problems.push(format!(
                    "static.fallback: `{f}` must be a file name inside the directory, such as index.html"
                ));
            } else if dir.is_dir() && !dir.join(f).is_file() {
                problems.push(format!("static.fallback: `{}` has no file `{f}`", s.dir));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Mount {
            line,
            at,
            dir,
            fallback: s.fallback.clone(),
        })
    }

    /// The paths whose answer decides whether the mount can serve at all: its root and its
    /// index (and its fallback, if named otherwise).
    pub fn roots(&self) -> Vec<String> {
        let mut roots = vec![self.at.clone(), format!("{}index.html", self.at)];
        if let Some(f) = &self.fallback {
            roots.push(format!("{}{f}", self.at));
        }
        roots
    }
}
