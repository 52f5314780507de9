//! Dialling the upstream.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

/// How long the upstream may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The upstream's address (`HOST:PORT`), dialled for each client connection.
#[derive(Clone, Debug)]
pub struct Dial(pub Arc<str>);

impl Dial {
    /// A new connection to the upstream, without Nagle's delay.
    pub async fn connect(&self) -> std::io::Result<TcpStream> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*self.0))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
