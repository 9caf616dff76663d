//! The connector behind a trait object: parameters are parsed once into the connector's type and
//! carried as `Arc<dyn Any>`, so the runtime and the gRPC service are not generic.

use std::any::Any;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use crate::config::ConfigMap;
use crate::connector::{Connector, ConnectorInfo, Direction, DiscoveredStream};
use crate::context::{DiscoveryContext, StreamContext};
use crate::error::{ConnectorError, ConnectorResult};
use crate::params::parse_params;
use crate::sink::Sink;
use crate::source::Source;

/// A stream's parameters, parsed into the connector's `Params` type.
pub type ParsedParams = Arc<dyn Any + Send + Sync>;

/// What the runtime needs of a connector, without its parameter type.
pub trait ErasedConnector: Send + Sync + 'static {
    /// See [`Connector::info`].
    fn info(&self) -> ConnectorInfo;
    /// Parses and validates one stream's metadata for `direction`.
    fn parse(
        &self,
        direction: Direction,
        metadata: &Map<String, Value>,
    ) -> ConnectorResult<ParsedParams>;
    /// See [`Connector::validate_config`].
    fn validate_config(&self, config: &Map<String, Value>) -> ConnectorResult<()>;
    /// See [`Connector::open_source`].
    fn open_source<'a>(
        &'a self,
        ctx: StreamContext,
        params: &'a ParsedParams,
    ) -> BoxFuture<'a, ConnectorResult<Box<dyn Source>>>;
    /// See [`Connector::open_sink`].
    fn open_sink<'a>(
        &'a self,
        ctx: StreamContext,
        params: &'a ParsedParams,
    ) -> BoxFuture<'a, ConnectorResult<Box<dyn Sink>>>;
    /// See [`Connector::discover`].
    fn discover(
        &self,
        config: ConfigMap,
        streams: Vec<(String, ParsedParams)>,
    ) -> BoxFuture<'_, ConnectorResult<Vec<DiscoveredStream>>>;
    /// The JSON Schema of one stream's metadata.
    fn stream_schema(&self) -> schemars::Schema;
    /// The JSON Schema of the dynamic config.
    fn config_schema(&self) -> schemars::Schema;
}

/// Wraps a [`Connector`] as an [`ErasedConnector`].
pub struct Erased<C>(pub Arc<C>);

fn downcast<P: Send + Sync + 'static>(params: &ParsedParams) -> ConnectorResult<Arc<P>> {
    params
        .clone()
        .downcast::<P>()
        .map_err(|_| ConnectorError::fatal("stream parameters of another connector type"))
}

impl<C: Connector> ErasedConnector for Erased<C> {
    fn info(&self) -> ConnectorInfo {
        self.0.info()
    }

    fn parse(
        &self,
        direction: Direction,
        metadata: &Map<String, Value>,
    ) -> ConnectorResult<ParsedParams> {
        let params: C::Params = parse_params(metadata)?;
        self.0.validate(direction, &params)?;
        Ok(Arc::new(params))
    }

    fn validate_config(&self, config: &Map<String, Value>) -> ConnectorResult<()> {
        self.0.validate_config(config)
    }

    fn open_source<'a>(
        &'a self,
        ctx: StreamContext,
        params: &'a ParsedParams,
    ) -> BoxFuture<'a, ConnectorResult<Box<dyn Source>>> {
        Box::pin(async move {
            let params = downcast::<C::Params>(params)?;
            self.0.open_source(ctx, &params).await
        })
    }

    fn open_sink<'a>(
        &'a self,
        ctx: StreamContext,
        params: &'a ParsedParams,
    ) -> BoxFuture<'a, ConnectorResult<Box<dyn Sink>>> {
        Box::pin(async move {
            let params = downcast::<C::Params>(params)?;
            self.0.open_sink(ctx, &params).await
        })
    }

    fn discover(
        &self,
        config: ConfigMap,
        streams: Vec<(String, ParsedParams)>,
    ) -> BoxFuture<'_, ConnectorResult<Vec<DiscoveredStream>>> {
        Box::pin(async move {
            let streams = streams
                .into_iter()
                .filter_map(|(id, p)| downcast::<C::Params>(&p).ok().map(|p| (id, p)))
                .collect();
            self.0.discover(DiscoveryContext { config, streams }).await
        })
    }

    fn stream_schema(&self) -> schemars::Schema {
        schemars::schema_for!(C::Params)
    }

    fn config_schema(&self) -> schemars::Schema {
        self.0.config_schema()
    }
}
