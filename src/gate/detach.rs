//! Settlement that outlives the client. Once a metered request's body has been handed to the
//! backend whole, the backend is doing the work, so the backend's reply, not the client's
//! patience, decides the charge: a client that hangs up on `POST /l3_detect` a second in must
//! not get seconds of GPU for free.
//!
//! hyper drops a request's future when its client goes away, and a dropped future is a
//! cancelled one. So forward, settle and own-the-reply of such a request run as one boxed
//! future that the request's future polls in place (no task, no channel: the usual case, a
//! client that waits, costs one allocation) and that, if the request's future is dropped
//! before it finishes, is handed to a task of its own to finish: a boxed future keeps its
//! place in memory when the box moves, so it goes on exactly where it was.
//!
//! A client that leaves before its body was sent whole is different: its body stream fails,
//! the forward fails with it (the backend connection is dropped mid-body, so the backend, which
//! reads the whole body before acting, never acts), and settle refunds. Either way the context
//! writes the request's log line when it is dropped with nobody left to respond to.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::context::RequestCtx;
use super::{Finished, Forward, Gate};

impl Gate {
    /// Phases 5 to 7 of a request with a charge held, run so the client cannot cancel them.
    pub(super) async fn finish_detached(
        &self,
        fwd: Box<Forward>,
        ctx: Box<RequestCtx>,
    ) -> Finished {
        let gate = Gate::new(self.services.clone());
        Finishing(Some(Box::pin(async move {
            let mut ctx = ctx;
            let result = gate.finish(fwd, &mut ctx).await;
            (result, ctx)
        })))
        .await
    }
}

/// The rest of a request that must run to its end: polled in place, and moved to a task of
/// its own if dropped before then.
struct Finishing(Option<Pin<Box<dyn Future<Output = Finished> + Send>>>);

impl Future for Finishing {
    type Output = Finished;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished> {
        let fut = self
            .0
            .as_mut()
            .expect("a finished request is not polled again");
        let done = std::task::ready!(fut.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(done)
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        let Some(rest) = self.0.take() else { return };
        // The client went away: the reply is still read and settled; nobody gets it, and the
        // context writes the request's log line as it is dropped.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    drop(rest.await);
                });
            }
            // No runtime (the process is ending): the held charge is refunded as it is dropped.
            Err(_) => drop(rest),
        }
    }
}
