//! Connection start-up of the SQL server: SCRAM-SHA-256 password authentication when a
//! password is configured, none otherwise (which the command line allows on loopback
//! only). Both register the connection, so a client's cancel request reaches it.
//!
//! The password never leaves this module: it is kept salted and hashed, and neither
//! `Debug` nor any message prints it.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    SCRAM_ITERATIONS, ScramAuth, gen_salted_password,
};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::{ClientInfo, ConnectionManager};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::Sink;

/// The one account of the server: a user name and its salted password hash.
pub struct Credentials {
    user: String,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl Credentials {
    /// Salts and hashes `password` for `user`.
    pub fn new(user: &str, password: &str) -> Self {
        let salt = rand::random::<[u8; 16]>().to_vec();
        Self {
            user: user.to_string(),
            salted_password: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            salt,
        }
    }

    /// Returns the user name.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"(hidden)")
            .finish()
    }
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if login.user() == Some(self.user.as_str()) {
            return Ok(Password::new(
                Some(self.salt.clone()),
                self.salted_password.clone(),
            ));
        }
        // Another user name fails like a wrong password, without saying which was wrong.
        let unknown = rand::random::<[u8; 16]>();
        let hash = gen_salted_password(&hex::encode(unknown), &self.salt, SCRAM_ITERATIONS);
        Ok(Password::new(Some(self.salt.clone()), hash))
    }
}

/// Start-up without authentication, registering the connection for cancel requests.
pub struct Open {
    connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// The start-up handler of one connection.
pub enum Startup {
    /// No password configured.
    Open(Open),
    /// SCRAM-SHA-256 against the configured credentials.
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

impl Startup {
    /// Creates the handler of one connection (SCRAM keeps state per connection).
    pub fn new(
        credentials: Option<&Arc<Credentials>>,
        connections: &Arc<ConnectionManager>,
    ) -> Self {
        let Some(credentials) = credentials else {
            return Startup::Open(Open {
                connections: connections.clone(),
            });
        };
        let mut scram = ScramAuth::new(credentials.clone());
        scram.set_iterations(SCRAM_ITERATIONS);
        let parameters = Arc::new(DefaultServerParameterProvider::default());
        let handler = SASLAuthStartupHandler::new(parameters)
            .with_scram(scram)
            .with_connection_manager(connections.clone());
        Startup::Scram(Box::new(handler))
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(handler) => handler.on_startup(client, message).await,
            Startup::Scram(handler) => handler.on_startup(client, message).await,
        }
    }
}
