//! Response bodies that pass the provider's bytes on as they arrive and read the
//! usage out of them on the way, so nothing is buffered for the client and nothing
//! of an answer is kept but its model and usage: a JSON body is scanned as it passes
//! ([`BodyMeter`]), an SSE stream is read event by event ([`super::sse`]), however
//! large the answer or any one event.
//!
//! Whatever happens, each request is counted exactly once ([`Metering`]): at the
//! end of the body, or, when the provider cuts the body or a stream's client goes
//! away, when the body is dropped, with the usage reported so far and the outcome
//! `incomplete`. A client that leaves a non-streamed answer does not make it free:
//! the provider bills the whole answer, so the gateway reads it to its end in the
//! background (bounded by [`ABANDONED_READ`]) and counts it as `abandoned` with its
//! reported usage.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::budget::Lease;
use super::encoding::{Decoder, Encoding};
use super::estimate;
use super::metrics::{FLAT_PRICED_MODEL, Metrics, OTHER_MODEL, Outcome, UsageLabels};
use super::pricing::{Prices, Unpriced, cost};
use super::sse;
use super::usage::{Api, BodyMeter, EventKind, Reported, StreamMeter, Usage};
use crate::money::PicoUsd;
use crate::verifier::metrics::Name;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Records one finished request in the ledger: its cost (`None`: not known, e.g. an
/// unpriced model) and its tokens.
pub type Recorder = Box<dyn FnOnce(Option<PicoUsd>, u64) + Send>;

/// The most a compressed answer may decode to for its usage to be read: the scan
/// keeps nothing of it, so this bounds only the time a small compressed body could
/// make the gateway spend unfolding it (about a second).
pub const DECODED_LIMIT: u64 = 256 * 1024 * 1024;
/// The most of one event held back while the gateway hides its own usage chunk:
/// that chunk is a few hundred bytes, so a longer event is not it and passes on as it
/// comes.
pub const HIDE_HOLD_LIMIT: usize = 16 * 1024;
/// How long the gateway keeps reading a non-streamed answer its client left.
pub const ABANDONED_READ: Duration = Duration::from_secs(120);

/// Everything needed to count one request once, whenever it ends.
pub struct Metering {
    pub labels: UsageLabels,
    /// The price table's provider key (`openai`, `anthropic`).
    pub price_provider: String,
    pub request_model: Option<String>,
    pub metrics: Arc<Metrics>,
    pub prices: Arc<Prices>,
    pub unpriced: Arc<Unpriced>,
    pub started: Instant,
    pub stream: bool,
    /// Records the finished request in the ledger: its cost (`None`: unknown) and tokens.
    pub charge: Option<Recorder>,
    /// The price of each request on a path allowed by an `unmeteredPaths` entry.
    pub flat_price: Option<PicoUsd>,
    /// A stream's request body, to estimate its prompt if the stream is cut before
    /// its usage arrives (a reference to the bytes sent, not a copy).
    pub prompt: Option<Bytes>,
    /// The request body's bytes in the budget, while the body is held (`prompt`).
    pub body_lease: Option<Lease>,
    /// What reading the answer holds, in the budget.
    pub answer_lease: Option<Lease>,
    done: bool,
}

impl Metering {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        labels: UsageLabels,
        price_provider: String,
        request_model: Option<String>,
        metrics: Arc<Metrics>,
        prices: Arc<Prices>,
        unpriced: Arc<Unpriced>,
        started: Instant,
        stream: bool,
    ) -> Self {
        metrics.in_flight.inc();
        Self {
            labels,
            price_provider,
            request_model,
            metrics,
            prices,
            unpriced,
            started,
            stream,
            charge: None,
            flat_price: None,
            prompt: None,
            body_lease: None,
            answer_lease: None,
            done: false,
        }
    }

    /// Reading the answer holds `bytes` now (counted in the budget, never refused).
    fn holds(&mut self, bytes: usize) {
        if let Some(lease) = &mut self.answer_lease {
            lease.set(bytes);
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// A copy that counts nothing (left behind where the real one moved on).
    fn detached(&self) -> Metering {
        let mut copy = Metering::new(
            self.labels.clone(),
            self.price_provider.clone(),
            None,
            self.metrics.clone(),
            self.prices.clone(),
            self.unpriced.clone(),
            self.started,
            self.stream,
        );
        copy.done = true;
        copy.metrics.in_flight.dec();
        copy
    }

    /// Counts the request; later calls do nothing.
    pub fn finish(&mut self, model: Option<&str>, usage: Option<Usage>, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.metrics.in_flight.dec();
        if outcome == Outcome::FlatPriced {
            return self.count(FLAT_PRICED_MODEL, usage, self.flat_price, outcome);
        }
        let model = model.or(self.request_model.as_deref()).unwrap_or_default().to_string();
        let table = self.prices.current();
        let priced = table.lookup(&self.price_provider, &model);
        let (label, cost) = match (priced, usage.as_ref()) {
            (Some((name, price)), Some(usage)) => (name.to_string(), Some(cost(usage, price))),
            (Some((name, _)), None) => (name.to_string(), None),
            (None, _) => (OTHER_MODEL.to_string(), None),
        };
        if priced.is_none() && !model.is_empty() && usage.is_some() {
            self.metrics
                .unpriced
                .get_or_create(&super::metrics::UnpricedLabels { provider: self.labels.provider.clone() })
                .inc();
            if self.unpriced.first_time(&self.price_provider, &model) {
                tracing::warn!(provider = %self.price_provider, model, "model not in the price table: tokens counted, cost not");
            }
        }
        self.count(&label, usage, cost, outcome);
    }

    /// Records the request in the metrics and in the ledger.
    fn count(&mut self, model_label: &str, usage: Option<Usage>, cost: Option<PicoUsd>, outcome: Outcome) {
        if let Some(charge) = self.charge.take() {
            // What the provider bills for a request it refused, never answered or
            // answered for free is known: nothing. Otherwise no cost means unknown.
            let billed = match outcome {
                Outcome::ProviderError
                | Outcome::UpstreamTimeout
                | Outcome::UpstreamUnavailable
                | Outcome::Unmetered => Some(cost.unwrap_or_default()),
                _ => cost,
            };
            charge(billed, usage.map_or(0, |u| u.total()));
        }
        let mut labels = self.labels.clone();
        labels.model = Name(model_label.into());
        self.metrics.record(&labels, &usage.unwrap_or_default(), cost, outcome);
        Metrics::observe(&self.metrics.request_duration, &self.labels.provider, self.started.elapsed());
    }

    fn first_byte(&self) {
        if self.stream {
            Metrics::observe(&self.metrics.first_byte, &self.labels.provider, self.started.elapsed());
        }
    }
}

impl Drop for Metering {
    fn drop(&mut self) {
        // A request is never left uncounted, whatever path dropped it.
        self.finish(None, None, Outcome::Incomplete);
    }
}

/// A body that fails when the provider sends nothing for `idle`.
pub struct Idle<B> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<B> Idle<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self { inner, idle, timer: Box::pin(tokio::time::sleep(idle)) }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the provider sent nothing for {0:?}")]
pub struct IdleTimeout(Duration);

impl<B> Body for Idle<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

type Inner = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// How a JSON answer's usage is read as it passes: the answer itself, or what it
/// decodes to when the provider compressed it anyway.
enum AnswerReader {
    Plain(BodyMeter),
    Decoded(Box<Decoder<BodyMeter>>),
    /// It did not decode (corrupt, or past [`DECODED_LIMIT`]): its usage is unreadable.
    Failed,
}

impl AnswerReader {
    fn push(&mut self, data: &[u8]) {
        match self {
            AnswerReader::Plain(meter) => meter.push(data),
            AnswerReader::Decoded(decoder) => {
                if let Err(error) = decoder.write(data) {
                    tracing::warn!(%error, "compressed answer not decoded; its usage is not read");
                    *self = AnswerReader::Failed;
                }
            }
            AnswerReader::Failed => {}
        }
    }

    /// Bytes held to read the usage (beyond the answer's own, which pass on).
    fn held(&self) -> usize {
        match self {
            AnswerReader::Plain(meter) => meter.held(),
            AnswerReader::Decoded(decoder) => decoder.get_ref().held(),
            AnswerReader::Failed => 0,
        }
    }

    /// The answer's model and usage; `None` when it cannot be read.
    fn finish(self) -> Option<Reported> {
        let meter = match self {
            AnswerReader::Plain(meter) => meter,
            AnswerReader::Decoded(decoder) => match decoder.finish() {
                Ok(meter) => meter,
                Err(error) => {
                    tracing::warn!(%error, "compressed answer not decoded; its usage is not read");
                    return None;
                }
            },
            AnswerReader::Failed => return None,
        };
        meter.finish().ok()
    }
}

/// The provider's body passed on; for a metered API its usage is read on the way
/// ([`BodyMeter`]), nothing of it kept but the model and the usage.
pub struct JsonBody {
    inner: Inner,
    api: Option<Api>,
    /// The outcome when no usage is read (`api` is `None`).
    unmetered: Outcome,
    reader: Option<AnswerReader>,
    metering: Metering,
}

impl JsonBody {
    pub fn new<B>(inner: B, api: Option<Api>, metering: Metering) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let inner = Inner::new(inner);
        let reader = api.map(|api| AnswerReader::Plain(BodyMeter::new(api)));
        Self { inner, api, unmetered: Outcome::Unmetered, reader, metering }
    }

    /// Passed on unread, counted with `outcome` (a provider's error answer).
    pub fn passthrough<B>(inner: B, outcome: Outcome, metering: Metering) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let inner = Inner::new(inner);
        Self { inner, api: None, unmetered: outcome, reader: None, metering }
    }

    /// The answer is compressed this way (its bytes still pass unchanged).
    pub fn encoded(mut self, encoding: Option<Encoding>) -> Self {
        if let (Some(api), Some(encoding)) = (self.api, encoding) {
            let decoder = Decoder::new(encoding, BodyMeter::new(api), DECODED_LIMIT);
            self.reader = Some(AnswerReader::Decoded(Box::new(decoder)));
        }
        self
    }

    /// Reads a chunk for its usage.
    fn keep(&mut self, data: &[u8]) {
        if let Some(reader) = &mut self.reader {
            reader.push(data);
            let held = reader.held();
            self.metering.holds(held);
        }
    }

    /// The client left before the end of a metered answer: the provider bills it
    /// all, so the rest is read in the background and its usage counted.
    fn read_abandoned(&mut self) -> bool {
        if self.reader.is_none() || self.inner.is_end_stream() {
            return false;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return false };
        let placeholder = Inner::new(http_body_util::Empty::new().map_err(|never| match never {}));
        let detached = self.metering.detached();
        let rest = JsonBody {
            inner: std::mem::replace(&mut self.inner, placeholder),
            api: self.api,
            unmetered: self.unmetered,
            reader: self.reader.take(),
            metering: std::mem::replace(&mut self.metering, detached),
        };
        runtime.spawn(rest.read_to_end());
        true
    }

    async fn read_to_end(mut self) {
        let read = async {
            while let Some(frame) = self.inner.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            let data = data.clone();
                            self.keep(&data);
                        }
                    }
                    Err(_) => return false,
                }
            }
            true
        };
        match tokio::time::timeout(ABANDONED_READ, read).await {
            Ok(true) => self.finish_as(Outcome::Abandoned),
            _ => self.metering.finish(None, None, Outcome::Incomplete),
        }
    }

    fn finish(&mut self) {
        self.finish_as(Outcome::Metered)
    }

    /// Counts the answer read whole: with its usage as `read`, else unreadable.
    fn finish_as(&mut self, read: Outcome) {
        let Some(reader) = self.reader.take() else {
            return self.metering.finish(None, None, self.unmetered);
        };
        match reader.finish() {
            Some(r) if r.usage.is_some() => self.metering.finish(r.model.as_deref(), r.usage, read),
            Some(r) => self.metering.finish(r.model.as_deref(), None, Outcome::UsageUnreadable),
            None => self.metering.finish(None, None, Outcome::UsageUnreadable),
        }
    }
}

impl Body for JsonBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                }
                // A body of known length is whole once its last byte came: hyper
                // does not poll it again, so it is counted now, not on drop.
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                this.metering.finish(None, None, Outcome::Incomplete);
                Poll::Ready(Some(Err(error)))
            }
            None => {
                this.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for JsonBody {
    fn drop(&mut self) {
        if self.metering.is_done() || self.read_abandoned() {
            return;
        }
        // Not at its end and not readable further: the body failed.
        self.metering.finish(None, None, Outcome::Incomplete);
    }
}

/// An SSE stream passed on as it comes, byte for byte, with its usage read event by
/// event ([`sse::Reader`]). When the gateway asked for OpenAI's usage chunk itself,
/// each event is held until its end ([`HIDE_HOLD_LIMIT`] at most) so that chunk can
/// be left out; comments and blank lines between events pass at once.
pub struct SseBody<B> {
    inner: B,
    reader: sse::Reader,
    meter: StreamMeter,
    api: Api,
    /// Leave out the usage-only chunk.
    hide_usage: bool,
    /// Hiding: the bytes of the event being read, until it is known not to be that chunk.
    held: Vec<u8>,
    /// Hiding: an event is being read (begun, not ended).
    in_event: bool,
    /// Hiding: the event being read is too long to be the usage chunk, and passes as it comes.
    passing: bool,
    out: VecDeque<Bytes>,
    sent_any: bool,
    ended: bool,
    metering: Metering,
}

impl<B> SseBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    pub fn new(inner: B, api: Api, hide_usage: bool, metering: Metering) -> Self {
        Self {
            inner,
            reader: sse::Reader::default(),
            meter: StreamMeter::new(api),
            api,
            hide_usage,
            held: Vec::new(),
            in_event: false,
            passing: false,
            out: VecDeque::new(),
            sent_any: false,
            ended: false,
            metering,
        }
    }

    /// Reads a chunk's events and queues what of it goes to the client.
    /// Reads a chunk's events and queues what of it goes to the client; an empty
    /// `data` at the stream's end.
    fn on_data(&mut self, data: Bytes, end: bool) {
        let (reader, meter) = (&mut self.reader, &mut self.meter);
        let mut marks = vec![];
        let mut on_mark = |mark| match mark {
            sse::Mark::Begin(at) => marks.push((at, None)),
            sse::Mark::End(at, event) => {
                let event: Box<sse::Event> = event;
                let kind = match event.data {
                    Some(data) => meter.event_read(&event.name, data),
                    None => EventKind::Forward,
                };
                marks.push((at, Some(kind)));
            }
        };
        match end {
            false => reader.push(&data, &mut on_mark),
            true => reader.end(&mut on_mark),
        }
        if !self.hide_usage {
            self.emit(data);
        } else {
            let mut from = 0;
            for (at, end) in marks {
                let piece = data.slice(from..at);
                from = at;
                match end {
                    // Before an event: a comment or a blank line, passed at once.
                    None => {
                        self.emit(piece);
                        self.in_event = true;
                    }
                    Some(_) if self.passing => self.emit(piece),
                    Some(kind) => {
                        self.held.extend_from_slice(&piece);
                        let event = Bytes::from(std::mem::take(&mut self.held));
                        if kind != EventKind::UsageOnly {
                            self.emit(event);
                        }
                    }
                }
                if end.is_some() {
                    (self.in_event, self.passing) = (false, false);
                }
            }
            let rest = data.slice(from..);
            if !self.in_event || self.passing {
                self.emit(rest);
            } else {
                self.held.extend_from_slice(&rest);
                if self.held.len() > HIDE_HOLD_LIMIT {
                    let event = Bytes::from(std::mem::take(&mut self.held));
                    self.emit(event);
                    self.passing = true;
                }
            }
        }
        let held = self.reader.held() + self.held.capacity();
        self.metering.holds(held);
    }

    fn emit(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.out.push_back(chunk);
        }
    }

    fn send(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.sent_any {
            self.sent_any = true;
            self.metering.first_byte();
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn fail(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finish();
        self.ended = true;
        Poll::Ready(Some(Err(error)))
    }
}

impl<B> Body for SseBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.out.pop_front() {
                return this.send(chunk);
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.on_data(data, false);
                    }
                }
                Some(Err(error)) => return this.fail(error),
                None => {
                    this.on_data(Bytes::new(), true);
                    // An event the stream did not end with a blank line is passed on as it came.
                    let rest = Bytes::from(std::mem::take(&mut this.held));
                    this.emit(rest);
                    this.finish();
                    this.ended = true;
                }
            }
        }
    }
}

impl<B> SseBody<B> {
    /// Counts the stream once, however it ended. A stream that reached its own end
    /// marker ([DONE], message_stop, response.completed) is what it reported; one
    /// cut earlier (the client left, the provider or a bound cut it) is billed by
    /// the provider for the prompt and what it generated, so what was not reported
    /// is estimated (`estimated`), never left at zero.
    fn finish(&mut self) {
        if self.metering.is_done() {
            return;
        }
        let model = self.meter.model().map(str::to_string);
        let (usage, outcome) = match (self.meter.complete(), self.meter.reported()) {
            (true, true) => (Some(self.meter.usage()), Outcome::Metered),
            (true, false) => (None, Outcome::UsageUnreadable),
            (false, reported) => {
                let api = self.api;
                let prompt_model = self.metering.request_model.clone().or(model.clone());
                let prompt = self.metering.prompt.take();
                let (usage, estimated) = self.meter.cut_usage(|| {
                    prompt.map_or(0, |body| estimate::prompt_tokens(api, prompt_model.as_deref(), &body))
                });
                match (estimated, reported) {
                    (true, _) => (Some(usage), Outcome::Estimated),
                    (false, true) => (Some(usage), Outcome::Incomplete),
                    (false, false) => (None, Outcome::Incomplete),
                }
            }
        };
        self.metering.finish(model.as_deref(), usage, outcome);
    }
}

impl<B> Drop for SseBody<B> {
    fn drop(&mut self) {
        // A client that stops reading at the stream's own end marker got all of it.
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::pricing::PriceTable;
    use http_body_util::{BodyExt, StreamBody};

    type Chunks = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    fn body(chunks: &[&str], error_at_end: bool) -> Chunks {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> =
            chunks.iter().map(|c| Ok(Frame::data(Bytes::from(c.to_string())))).collect();
        if error_at_end {
            frames.push(Err("connection reset".into()));
        }
        StreamBody::new(futures::stream::iter(frames))
    }

    fn metering(metrics: &Arc<Metrics>) -> Metering {
        let labels = UsageLabels {
            organization: Name("acme".into()),
            group: Name("eng".into()),
            application: Name("chat".into()),
            use_case: Name::default(),
            provider: Name("openai".into()),
            model: Name::default(),
        };
        let table = PriceTable::parse("providers: {openai: {gpt-4o-mini: {input: 1, output: 2}}}").unwrap();
        let prices = Arc::new(Prices::new(table));
        let unpriced = Arc::new(Unpriced::default());
        Metering::new(labels, "openai".into(), None, metrics.clone(), prices, unpriced, Instant::now(), true)
    }

    fn count(metrics: &Metrics, outcome: &str) -> u64 {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("payi_gateway_proxied_requests_total{") && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    fn tokens(metrics: &Metrics, token_type: &'static str) -> u64 {
        let labels = |t| TokenLabels {
            organization: Name("acme".into()),
            group: Name("eng".into()),
            application: Name("chat".into()),
            use_case: Name::default(),
            provider: Name("openai".into()),
            model: Name("gpt-4o-mini".into()),
            token_type: t,
            source: "proxy",
        };
        metrics.tokens.get_or_create(&labels(token_type)).get()
    }

    use super::super::metrics::TokenLabels;

    const FIRST: &str =
        "data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n";
    const USAGE: &str =
        "data: {\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    async fn collect<B: Body<Data = Bytes, Error = BoxError> + Unpin>(b: B) -> Result<String, BoxError> {
        Ok(String::from_utf8(b.collect().await?.to_bytes().to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_stream_whose_usage_the_gateway_asked_for_hides_that_chunk_and_counts_it() {
        let metrics = Arc::new(Metrics::default());
        // Split across chunk boundaries on purpose.
        let wire = format!("{FIRST}{USAGE}{DONE}");
        let (a, b) = wire.split_at(30);
        let out = collect(SseBody::new(body(&[a, b], false), Api::ChatCompletions, true, metering(&metrics))).await;
        let out = out.unwrap();
        assert!(out.contains("\"content\":\"Hi\"") && out.ends_with("data: [DONE]\n\n"), "{out}");
        assert!(!out.contains("prompt_tokens"), "the usage chunk reached the client: {out}");
        assert_eq!((tokens(&metrics, "input"), tokens(&metrics, "output")), (7, 2));
        assert_eq!(count(&metrics, "metered"), 1);
    }

    /// Hiding the usage chunk takes out its block and nothing else: keep-alive
    /// comments, `retry`, CRLF line ends and spacing reach the client as sent,
    /// however the provider's writes cut the stream.
    #[tokio::test]
    async fn a_hidden_usage_chunk_is_the_only_bytes_taken_out() {
        let usage_crlf = USAGE.replace("\n", "\r\n");
        let before = format!(
            ": ping\n\nretry: 3000\n\n{FIRST}:  keep-alive\r\n\r\ndata:{{\"choices\":[{{\"delta\":{{}}}}]}}\n\n"
        );
        let after = format!(": ping\n\n{DONE}: bye\n\n");
        let wire = format!("{before}{usage_crlf}{after}");
        for cut in [1, 7, 64, wire.len()] {
            let metrics = Arc::new(Metrics::default());
            let chunks: Vec<&str> = wire.as_bytes().chunks(cut).map(|c| std::str::from_utf8(c).unwrap()).collect();
            let hidden = SseBody::new(body(&chunks, false), Api::ChatCompletions, true, metering(&metrics));
            assert_eq!(collect(hidden).await.unwrap(), format!("{before}{after}"), "cut every {cut} bytes");
            assert_eq!((tokens(&metrics, "input"), count(&metrics, "metered")), (7, 1));
        }
    }

    /// A stream that starts with a byte-order mark, however its bytes are split,
    /// is read (it made the SSE parser panic) and passed on as sent.
    #[tokio::test]
    async fn a_leading_byte_order_mark_is_read_and_passed_on() {
        let wire = format!("\u{feff}{FIRST}{USAGE}{DONE}");
        for hide in [false, true] {
            for cut in [1, 2, 4, wire.len()] {
                let metrics = Arc::new(Metrics::default());
                let chunks: Vec<Result<Frame<Bytes>, BoxError>> =
                    wire.as_bytes().chunks(cut).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
                let body = StreamBody::new(futures::stream::iter(chunks));
                let out = SseBody::new(body, Api::ChatCompletions, hide, metering(&metrics)).collect().await;
                let out = String::from_utf8(out.unwrap().to_bytes().to_vec()).unwrap();
                let expected = if hide { format!("\u{feff}{FIRST}{DONE}") } else { wire.clone() };
                assert_eq!(out, expected, "hide {hide}, cut every {cut}");
                assert_eq!((tokens(&metrics, "input"), count(&metrics, "metered")), (7, 1), "hide {hide}, cut {cut}");
            }
        }
    }

    #[tokio::test]
    async fn hiding_the_usage_chunk_passes_every_other_byte_and_long_events_as_they_come() {
        let metrics = Arc::new(Metrics::default());
        let text = "z".repeat(100_000);
        let long = format!(
            "data: {{\"model\":\"gpt-4o-mini\",\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\r\n\r\n"
        );
        let wire = format!(": ping\n\n{FIRST}{long}: keep-alive\n\n{USAGE}{DONE}");
        let chunks: Vec<&str> = wire.as_bytes().chunks(7000).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let stream = SseBody::new(body(&chunks, false), Api::ChatCompletions, true, metering(&metrics));
        let out = collect(stream).await.unwrap();
        assert!(out == format!(": ping\n\n{FIRST}{long}: keep-alive\n\n{DONE}"), "only the usage chunk is left out");
        assert_eq!((tokens(&metrics, "input"), count(&metrics, "metered")), (7, 1));
    }

    #[tokio::test]
    async fn a_stream_the_client_asked_usage_for_passes_byte_for_byte() {
        let metrics = Arc::new(Metrics::default());
        let wire = format!("{FIRST}{USAGE}{DONE}");
        let out = collect(SseBody::new(body(&[&wire], false), Api::ChatCompletions, false, metering(&metrics))).await;
        assert_eq!(out.unwrap(), wire);
        assert_eq!(tokens(&metrics, "input"), 7);
    }

    #[tokio::test]
    async fn a_stream_cut_by_the_provider_is_incomplete_and_keeps_what_was_reported() {
        let metrics = Arc::new(Metrics::default());
        let cut = SseBody::new(body(&[FIRST, USAGE], true), Api::ChatCompletions, false, metering(&metrics));
        assert!(collect(cut).await.is_err());
        assert_eq!(count(&metrics, "incomplete"), 1);
        assert_eq!(tokens(&metrics, "input"), 7, "the usage reported before the cut counts");
        // Dropped by a departing client before the usage: counted once, the prompt
        // (by tokenizer) and the one content chunk passed estimated, never zero.
        let metrics = Arc::new(Metrics::default());
        let mut metered = metering(&metrics);
        let prompt = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello there"}]}"#;
        metered.prompt = Some(Bytes::from_static(prompt.as_bytes()));
        let mut left = SseBody::new(body(&[FIRST, USAGE, DONE], false), Api::ChatCompletions, false, metered);
        let first = left.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some());
        drop(left);
        assert_eq!(
            (count(&metrics, "estimated"), count(&metrics, "metered"), count(&metrics, "incomplete")),
            (1, 0, 0)
        );
        let expected_prompt =
            super::estimate::prompt_tokens(Api::ChatCompletions, Some("gpt-4o-mini"), prompt.as_bytes());
        assert_eq!((tokens(&metrics, "input"), tokens(&metrics, "output")), (expected_prompt, 1));
        assert!(expected_prompt >= 2 + 3 + 3, "text, message framing and reply priming: {expected_prompt}");
    }

    #[tokio::test]
    async fn json_bodies_are_counted_once_and_malformed_ones_as_unreadable() {
        let metrics = Arc::new(Metrics::default());
        let json = r#"{"model":"gpt-4o-mini","usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
        let (a, b) = json.split_at(12);
        let out = collect(JsonBody::new(body(&[a, b], false), Some(Api::ChatCompletions), metering(&metrics))).await;
        assert_eq!(out.unwrap(), json);
        assert_eq!((tokens(&metrics, "input"), count(&metrics, "metered")), (5, 1));
        let metrics = Arc::new(Metrics::default());
        let bad = collect(JsonBody::new(
            body(&["{\"id\": \"x\", \"usage\": {"], false),
            Some(Api::ChatCompletions),
            metering(&metrics),
        ));
        assert!(bad.await.is_ok(), "a malformed body is still passed on");
        assert_eq!(count(&metrics, "usage_unreadable"), 1);
        assert_eq!(count(&metrics, "incomplete"), 0, "counted once");
    }
}
