//! The `proxy.toml` loader: any text is a configuration that builds a route table, or a list
//! of errors; never a panic (an operator's typo must not crash `check-config` or a reload).

#![no_main]

use idoctor_gate::config::Config;
use idoctor_gate::proxy::routes::RouteTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str_isolated(text, "fuzz.toml") {
        Ok(config) => {
            let _ = RouteTable::build(&config);
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an error that says nothing"),
    }
});
