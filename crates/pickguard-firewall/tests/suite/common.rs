//! Helpers shared by the firewall's in-process tests.
#![allow(dead_code)]

use std::net::SocketAddr;

/// Serve `app` on a free loopback port, with connection info (as the firewall needs).
pub async fn spawn(app: axum::Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap()
    });
    addr
}
