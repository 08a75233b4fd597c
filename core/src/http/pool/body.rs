//! The answer's body, which gives its connection back to the pool once read to the end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::{Endpoint, Pools, RequestBody};

/// A connection to give back: the pools, its endpoint, its request half.
type Checkin<K, B> = (Arc<Pools<K, B>>, K, SendRequest<B>);

/// A response body that gives its connection back to the pool once read to the end.
pub struct PooledBody<K: Endpoint, B: RequestBody> {
    body: Incoming,
    /// The connection and where it goes back; `None` once given back or broken.
    connection: Option<Checkin<K, B>>,
    ended: bool,
}

impl<K: Endpoint, B: RequestBody> PooledBody<K, B> {
    /// `body`, read over `sender`'s connection to `to`, which goes back to `pools`.
    pub(super) fn new(
        body: Incoming,
        pools: Arc<Pools<K, B>>,
        to: K,
        sender: SendRequest<B>,
    ) -> Self {
        Self {
            body,
            connection: Some((pools, to, sender)),
            ended: false,
        }
    }
}

impl<K: Endpoint, B: RequestBody> std::fmt::Debug for PooledBody<K, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("ended", &self.ended)
            .field("pooled", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl<K: Endpoint, B: RequestBody> Body for PooledBody<K, B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => self.connection = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<K: Endpoint, B: RequestBody> Drop for PooledBody<K, B> {
    fn drop(&mut self) {
        // Read to the end (or empty): the connection can carry another request. Otherwise
        // dropping the sender closes it, the rest of this response unread.
        if self.is_end_stream()
            && let Some((pools, to, sender)) = self.connection.take()
        {
            pools.checkin(&to, sender);
        }
    }
}
