//! The hand-over of listening sockets between two ends of a real Unix socket pair:
//! every socket arrives, by address; a peer that misbehaves at any step is refused
//! and the old side keeps its sockets.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::*;

/// `n` loopback listeners recorded in a registry, as shards record theirs.
fn listeners(n: usize) -> (Arc<OpenListeners>, Vec<TcpListener>) {
    let registry = Arc::new(OpenListeners::default());
    let sockets: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, socket) in sockets.iter().enumerate() {
        registry.add(
            Holder::Shard(i % 3),
            socket.local_addr().unwrap(),
            socket.as_fd(),
        );
    }
    (registry, sockets)
}

#[test]
fn every_socket_arrives_and_the_old_side_hears_serving() {
    // More than one message's worth, so batching is exercised.
    let (registry, sockets) = listeners(FDS_PER_MESSAGE + 5);
    let (old, new) = UnixStream::pair().unwrap();
    let old_side = std::thread::spawn(move || hand_over(old, &registry));
    let mut inherited = receive_sockets(new).unwrap();
    assert_eq!(inherited.from_pid, std::process::id());
    assert_eq!(inherited.len(), sockets.len());
    for socket in &sockets {
        let addr = socket.local_addr().unwrap();
        let fds = inherited.take(addr);
        assert_eq!(fds.len(), 1, "{addr}");
        // The very socket: a connection to it is accepted through the passed copy.
        let adopted = TcpListener::from(fds.into_iter().next().unwrap());
        let _client = TcpStream::connect(addr).unwrap();
        adopted.accept().unwrap();
    }
    assert_eq!(inherited.len(), 0);
    inherited.serving().unwrap();
    assert_eq!(old_side.join().unwrap().unwrap(), std::process::id());
}

#[test]
fn a_removed_socket_is_not_handed_over() {
    let (registry, sockets) = listeners(2);
    let gone = sockets[1].local_addr().unwrap();
    registry.remove(Holder::Shard(1), gone);
    let (old, new) = UnixStream::pair().unwrap();
    let old_side = std::thread::spawn(move || hand_over(old, &registry));
    let mut inherited = receive_sockets(new).unwrap();
    assert_eq!(inherited.len(), 1);
    assert!(inherited.take(gone).is_empty());
    drop(inherited);
    let error = old_side.join().unwrap().unwrap_err().to_string();
    assert!(error.contains("went away before it served"), "{error}");
}

#[test]
fn a_peer_that_is_not_ringress_is_refused() {
    let (registry, _sockets) = listeners(1);
    let (old, mut new) = UnixStream::pair().unwrap();
    let old_side = std::thread::spawn(move || hand_over(old, &registry));
    new.write_all(b"GET / HTTP/1.1\n").unwrap();
    let error = old_side.join().unwrap().unwrap_err().to_string();
    assert!(error.contains("not \"ringress-upgrade 1\""), "{error}");
}

#[test]
fn a_peer_that_answers_wrong_after_the_sockets_is_refused() {
    let (registry, _sockets) = listeners(1);
    let (old, new) = UnixStream::pair().unwrap();
    let old_side = std::thread::spawn(move || hand_over(old, &registry));
    let inherited = receive_sockets(new).unwrap();
    let mut peer = inherited.peer.try_clone().unwrap();
    peer.write_all(b"serving 1\n").unwrap();
    let error = old_side.join().unwrap().unwrap_err().to_string();
    assert!(error.contains("instead of `serving`"), "{error}");
}

#[test]
fn an_old_side_that_sends_garbage_fails_the_take_over() {
    for garbage in [
        &b"end 3 1\n"[..],
        b"hello\n",
        b"end x 1\n",
        b"\xff\xfe\n",
        b"",
    ] {
        let (mut old, new) = UnixStream::pair().unwrap();
        let old_side = std::thread::spawn(move || {
            let mut hello = String::new();
            BufReader::new(&old).read_line(&mut hello).unwrap();
            old.write_all(garbage).unwrap();
        });
        let error = receive_sockets(new).err().expect("refused");
        old_side.join().unwrap();
        assert!(!format!("{error:#}").is_empty(), "{garbage:?}");
    }
}

#[test]
fn nobody_on_the_path_is_a_fresh_start() {
    let dir = std::env::temp_dir().join(format!("ringress-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(take_over(&dir.join("absent.sock")).unwrap().is_none());
    // A socket file nobody listens on any more (a process that was killed).
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(take_over(&stale).unwrap().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn end_lines_are_parsed_once_whole() {
    assert_eq!(
        parse_end(b"fds 2\nfds 1\nend 3 42\n").unwrap(),
        Some((3, 42))
    );
    assert_eq!(parse_end(b"fds 2\nend 3 4").unwrap(), None);
    assert!(parse_end(b"fds two\n").is_err());
}
