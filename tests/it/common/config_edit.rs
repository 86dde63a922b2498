//! Edits of a configuration file by key, for tests that start from the shipped `proxy.toml`:
//! `ConfigEdit::shipped().set("server.listen", "127.0.0.1:0")`. Each edit names the key it
//! changes, and an edit whose table is missing from the file fails the test at once, where a
//! text replacement that stopped matching would change nothing and say nothing.

use toml::{Table, Value};

pub struct ConfigEdit(Table);

impl ConfigEdit {
    pub fn parse(text: &str) -> ConfigEdit {
        ConfigEdit(text.parse().unwrap_or_else(|e| panic!("not TOML: {e}")))
    }

    /// The shipped `proxy.toml`.
    pub fn shipped() -> ConfigEdit {
        ConfigEdit::parse(&super::shipped_config())
    }

    /// The table holding `path`'s last key, which must exist unless `create`.
    fn parent(&mut self, path: &str, create: bool) -> (&mut Table, String) {
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().expect("a key").to_string();
        let mut table = &mut self.0;
        for key in keys {
            if create {
                table = table
                    .entry(key)
                    .or_insert_with(|| Value::Table(Table::new()))
                    .as_table_mut()
                    .unwrap_or_else(|| panic!("`{key}` of `{path}` is not a table"));
            } else {
                table = table
                    .get_mut(key)
                    .and_then(Value::as_table_mut)
                    .unwrap_or_else(|| panic!("the file has no table `{key}` for `{path}`"));
            }
        }
        (table, last)
    }

    /// Sets an existing key (its table must be in the file).
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> ConfigEdit {
        let (table, key) = self.parent(path, false);
        assert!(
            table.contains_key(&key),
            "the file has no key `{path}` to set"
        );
        table.insert(key, value.into());
        self
    }

    /// Sets a key, creating it and its tables where missing.
    pub fn insert(mut self, path: &str, value: impl Into<Value>) -> ConfigEdit {
        let (table, key) = self.parent(path, true);
        table.insert(key, value.into());
        self
    }

    /// Puts `value` first in the array at `path`.
    pub fn prepend(mut self, path: &str, value: impl Into<Value>) -> ConfigEdit {
        let (table, key) = self.parent(path, false);
        table
            .get_mut(&key)
            .and_then(Value::as_array_mut)
            .unwrap_or_else(|| panic!("`{path}` is not an array"))
            .insert(0, value.into());
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        toml::to_string(&self.0).expect("a table renders")
    }
}
