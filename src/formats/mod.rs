//! The outside formats the gate reads, on the ground floor: ids and amounts of money (the types
//! the domain passes around, made only by parsing), one field of a JSON reply, RSA keys as the
//! payment providers hand them out, TLS certificate files, and a check over a text's bytes. They know nothing of the gate, so
//! `config` can check the values an operator wrote with the same code their owners (`billing`,
//! `payments`, `server`) later use, without importing a module above it.

pub mod alipay_certs;
pub mod ids;
pub mod json_field;
pub mod money;
pub mod rsa_keys;
pub mod text;
pub mod tls_files;
