//! Helpers leave nothing behind: no process, no socket, no directory, even when the
//! test holding them panics.

use std::path::Path;

use spegel_testbed::{Containerd, Upstream, require_root_tools};

fn nothing_listens_on(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_err()
}

#[tokio::test]
async fn dropping_a_containerd_kills_it_and_removes_its_directory() {
    require_root_tools().unwrap();
    let containerd = Containerd::start().await.unwrap();
    let socket = containerd.socket().to_owned();
    let dir = socket.parent().unwrap().to_owned();

    drop(containerd);

    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert!(nothing_listens_on(&socket));
}

#[tokio::test]
async fn a_test_that_panics_still_cleans_up_its_containerd_and_upstream() {
    require_root_tools().unwrap();
    let (sender, receiver) = tokio::sync::oneshot::channel();

    let outcome = tokio::spawn(async move {
        let containerd = Containerd::start().await.unwrap();
        let upstream = Upstream::start().await.unwrap();
        sender
            .send((containerd.socket().to_owned(), upstream.addr()))
            .unwrap();
        panic!("the test failed");
    })
    .await;

    assert!(outcome.unwrap_err().is_panic());
    let (socket, upstream_addr) = receiver.await.unwrap();
    assert!(!socket.parent().unwrap().exists());
    assert!(nothing_listens_on(&socket));
    assert!(std::net::TcpStream::connect(upstream_addr).is_err());
}
