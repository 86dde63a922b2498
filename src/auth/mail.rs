//! Outgoing mail for verification codes. With `[smtp]` configured, codes go by SMTP (STARTTLS
//! on 587 or TLS on 465, as QQ mail needs). Without it, in development, the code goes to the log
//! so registration can be tried on a fresh machine; production refuses to send nothing.

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpSecurity};
use crate::error::Refusal;

/// What an emailed code is for: it names the mail's subject and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMail {
    /// Proves an address before registration or an email change.
    Verify,
    /// Lets the owner of an address set a new password (`/auth/forgot-password`).
    Reset,
}

pub enum Mailer {
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
        from_name: String,
    },
    /// Development without SMTP: the code is logged.
    Log,
    /// Production without SMTP: codes cannot be sent.
    Disabled,
}

impl Mailer {
    pub fn new(smtp: Option<&SmtpConfig>, production: bool) -> Result<Mailer, String> {
        let Some(c) = smtp else {
            return Ok(if production {
                Mailer::Disabled
            } else {
                Mailer::Log
            });
        };
        let builder = match c.security {
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)
                .map_err(|e| format!("smtp.host: {e}"))?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)
                .map_err(|e| format!("smtp.host: {e}"))?,
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
        };
        let mut builder = builder.port(c.port);
        if let (Some(user), Some(pass)) = (&c.username, &c.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        let from = format!("{} <{}>", c.from_name, c.from_email)
            .parse()
            .map_err(|e| format!("smtp.from_email: {e}"))?;
        Ok(Mailer::Smtp {
            transport: Box::new(builder.build()),
            from,
            from_name: c.from_name.clone(),
        })
    }

    /// Whether codes can be sent at all (production without `[smtp]` cannot).
    pub fn can_send(&self) -> bool {
        !matches!(self, Mailer::Disabled)
    }

    pub async fn send_code(
        &self,
        kind: CodeMail,
        to: &str,
        code: &str,
        minutes: u64,
    ) -> Result<(), Refusal> {
        match self {
            Mailer::Log => {
                tracing::warn!(email = %to, code = %code, kind = ?kind, "emailed code (no [smtp] configured: development only)");
                Ok(())
            }
            Mailer::Disabled => Err(Refusal::unavailable(
                "email delivery is not configured on this gate",
            )),
            Mailer::Smtp {
                transport,
                from,
                from_name,
            } => {
                let to: Mailbox = to
                    .parse()
                    .map_err(|_| Refusal::invalid("invalid email address"))?;
                let (subject, body) = match kind {
                    CodeMail::Verify => (
                        "邮箱验证码",
                        format!(
                            "您的验证码是 {code}，{minutes} 分钟内有效。\nYour verification code is {code}; it expires in {minutes} minutes.\n"
                        ),
                    ),
                    CodeMail::Reset => (
                        "重置密码",
                        format!(
                            "您正在重置密码，验证码是 {code}，{minutes} 分钟内有效。如果不是您本人操作，请忽略本邮件。\n\
                             Your password reset code is {code}; it expires in {minutes} minutes. If you did not ask for it, ignore this mail: your password stays as it is.\n"
                        ),
                    ),
                };
                let msg = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(format!("{from_name} - {subject}"))
                    .header(ContentType::TEXT_PLAIN)
                    .body(body)
                    .map_err(|_| Refusal::failed("cannot build the mail"))?;
                transport.send(msg).await.map(|_| ()).map_err(|e| {
                    tracing::warn!(error = %e, "sending a verification mail failed");
                    Refusal::unavailable("发送验证码失败，请稍后重试")
                })
            }
        }
    }
}
