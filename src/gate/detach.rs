//! Settlement that outlives the client. Once a metered request's body has been handed to the
//! backend whole, the backend is doing the work, so the backend's reply, not the client's
//! patience, decides the charge: a client that hangs up on `POST /l3_detect` a second in must
//! not get seconds of GPU for free. Forward, settle and own-the-reply of such a request run in
//! a task of their own, which the client's connection going away does not cancel; the
//! request's future only waits for it.
//!
//! A client that leaves before its body was sent whole is different: its body stream fails,
//! the forward fails with it (the backend connection is dropped mid-body, so the backend, which
//! reads the whole body before acting, never acts), and settle refunds. Either way the task
//! writes the request's log line if nobody is left to respond to (`RequestCtx`'s drop).

use axum::body::Body;
use http::Response;

use super::context::RequestCtx;
use super::{Forward, Gate};
use crate::error::GateError;

impl Gate {
    /// Phases 5 to 7 of a request with a charge held, in a task the client cannot cancel.
    pub(super) async fn finish_detached(
        &self,
        fwd: Forward,
        ctx: RequestCtx,
    ) -> (Result<Response<Body>, GateError>, RequestCtx) {
        let stand_in = ctx.stand_in();
        let gate = Gate::new(self.services.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ctx = ctx;
            let result = gate.finish(fwd, &mut ctx).await;
            // The client is gone: the reply is dropped (the backend connection with it) and the
            // context writes the log line as it goes.
            drop(tx.send((result, ctx)));
        });
        match rx.await {
            Ok(done) => done,
            // The task panicked; its context refunded what it held as it unwound.
            Err(_) => (
                Err(GateError::new(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "the request failed inside the gate",
                )),
                stand_in.stands_in(),
            ),
        }
    }
}
