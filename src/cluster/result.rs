//! What every engine call answers: a boxed future of a value or `EngineError`.

use futures_util::future::{ready, BoxFuture};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

pub type EngineResult<T> = BoxFuture<'static, Result<T, EngineError>>;

pub fn done<T: Send + 'static>(value: T) -> EngineResult<T> {
    Box::pin(ready(Ok(value)))
}
