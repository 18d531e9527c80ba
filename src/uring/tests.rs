//! Tests of the runtime over real loopback sockets: echo, many connections through one
//! multishot listener, cancellation by timeout, the buffer-ring fallback, cross-thread
//! notification, reuseport across two runtimes, connect errors, timer ordering and
//! `next_turn`.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use super::ring::SetupError;
use super::time::Elapsed;
use super::*;

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
/// Upper bound for anything a test waits for; tests normally finish far sooner.
const TEST_DEADLINE: Duration = Duration::from_secs(10);

fn runtime() -> Runtime {
    Runtime::new(RingOptions {
        entries: 256,
        recv_buffers: 64,
        recv_buffer_size: 4096,
    })
    .expect("io_uring runtime")
}

fn no_reuseport() -> ListenOptions {
    ListenOptions {
        reuseport: false,
        backlog: 1024,
        user_timeout: None,
    }
}

/// Echoes everything received until the peer shuts down its sending side.
async fn echo(stream: TcpStream) {
    loop {
        let buf = match stream.recv().await {
            Ok(buf) if buf.is_empty() => return,
            Ok(buf) => buf,
            Err(_) => return,
        };
        let (res, _) = stream.send_all(buf.to_vec()).await;
        if res.is_err() {
            return;
        }
    }
}

/// Receives until `want` bytes arrived or the peer closed.
async fn recv_exact(stream: &TcpStream, want: usize) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < want {
        let buf = stream.recv().await?;
        if buf.is_empty() {
            break;
        }
        got.extend_from_slice(&buf);
    }
    Ok(got)
}

/// A client connected to a server socket over loopback (the listener is closed).
async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = Listener::bind(LOOPBACK, no_reuseport()).unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// Sleeps in small steps until `done()` holds (or the test deadline passes).
async fn wait_until(mut done: impl FnMut() -> bool) {
    let ok = timeout(TEST_DEADLINE, async {
        while !done() {
            sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "condition not reached within {TEST_DEADLINE:?}");
}

#[test]
fn io_uring_is_available_here() {
    check_available().expect("io_uring available on the test machine");
    let rt = runtime();
    assert!(!rt.ring_setup().is_empty());
    eprintln!("ring setup: {}", rt.ring_setup());
}

#[test]
fn try_recv_takes_only_what_already_arrived() {
    let rt = runtime();
    rt.block_on(async {
        let (client, server) = connected_pair().await;
        assert!(server.try_recv().is_none(), "nothing sent yet");
        let (res, _) = client.send_all(b"first".to_vec()).await;
        res.unwrap();
        // The first recv waits; what arrives meanwhile is taken without waiting.
        let first = server.recv().await.unwrap();
        assert_eq!(&*first, b"first");
        let (res, _) = client.send_all(b"second".to_vec()).await;
        res.unwrap();
        let mut got = None;
        wait_until(|| {
            got = server.try_recv();
            got.is_some()
        })
        .await;
        assert_eq!(&*got.expect("delivered").unwrap(), b"second");
        assert!(server.try_recv().is_none());
        client.shutdown_write().unwrap();
        let end = server.recv().await.unwrap();
        assert!(end.is_empty(), "the end is reported");
    });
}

/// Bytes a peer sent before `next_turn` are there for `try_recv` after it: the pass
/// through the ring delivers what the kernel already had, without waiting.
#[test]
fn next_turn_delivers_what_already_arrived() {
    let rt = runtime();
    rt.block_on(async {
        let listener = Listener::bind(LOOPBACK, no_reuseport()).unwrap();
        let addr = listener.local_addr().unwrap();
        // A plain blocking socket: its send completes outside the ring.
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(server.try_recv().is_none(), "nothing sent yet");
        std::io::Write::write_all(&mut peer, b"hello").unwrap();
        next_turn().await;
        let got = server.try_recv().expect("delivered by the turn").unwrap();
        assert_eq!(&*got, b"hello");
    });
}

#[test]
fn echo_round_trip() {
    let rt = runtime();
    rt.block_on(async {
        let listener = Listener::bind(LOOPBACK, no_reuseport()).unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            assert_eq!(stream.peer_addr().unwrap(), peer);
            // Inherited from the listener: no setsockopt per connection.
            assert!(stream.nodelay().unwrap());
            echo(stream).await;
        });
        let client = TcpStream::connect(addr).await.unwrap();
        assert!(!client.nodelay().unwrap());
        client.set_nodelay(true).unwrap();
        assert!(client.nodelay().unwrap());
        let (res, back) = client.send_all(b"hello, ringress".to_vec()).await;
        res.unwrap();
        assert_eq!(back, b"hello, ringress");
        let got = recv_exact(&client, back.len()).await.unwrap();
        assert_eq!(got, b"hello, ringress");
        client.shutdown_write().unwrap();
        let eof = client.recv().await.unwrap();
        assert!(eof.is_empty(), "server closes after our shutdown");
    });
}

#[test]
fn echo_over_ipv6_loopback() {
    let rt = runtime();
    rt.block_on(async {
        let any_v6: SocketAddr = "[::1]:0".parse().unwrap();
        let Ok(listener) = Listener::bind(any_v6, no_reuseport()) else {
            eprintln!("no IPv6 loopback here; skipping");
            return;
        };
        let addr = listener.local_addr().unwrap();
        assert!(addr.is_ipv6() && addr.port() != 0);
        spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            assert!(peer.is_ipv6());
            echo(stream).await;
        });
        let client = TcpStream::connect(addr).await.unwrap();
        let (res, _) = client.send_all(&b"v6"[..]).await;
        res.unwrap();
        assert_eq!(recv_exact(&client, 2).await.unwrap(), b"v6");
    });
}

#[test]
fn two_hundred_connections_through_one_multishot_listener() {
    const CONNECTIONS: usize = 200;
    let rt = runtime();
    rt.block_on(async {
        let listener = Listener::bind(LOOPBACK, no_reuseport()).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Rc::new(Cell::new(0usize));
        let acc = Rc::clone(&accepted);
        spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        acc.set(acc.get() + 1);
                        spawn(echo(stream));
                    }
                    Err(e) => panic!("accept failed: {e}"),
                }
            }
        });
        let finished = Rc::new(Cell::new(0usize));
        for i in 0..CONNECTIONS {
            let finished = Rc::clone(&finished);
            spawn(async move {
                let client = TcpStream::connect(addr).await.unwrap();
                let msg = format!("connection {i:04}");
                let (res, msg) = client.send_all(msg).await;
                res.unwrap();
                let got = recv_exact(&client, msg.len()).await.unwrap();
                assert_eq!(got, msg.as_bytes());
                finished.set(finished.get() + 1);
            });
        }
        wait_until(|| finished.get() == CONNECTIONS).await;
        assert_eq!(accepted.get(), CONNECTIONS);
    });
}

#[test]
fn timeout_around_a_recv_that_never_completes() {
    let rt = runtime();
    rt.block_on(async {
        let (client, server) = connected_pair().await;

        let res = timeout(Duration::from_millis(30), client.recv()).await;
        let err = res.expect_err("nothing was sent, so the recv must time out");
        assert_eq!(err.to_string(), "timed out after 30ms");

        // The stream is still usable after its recv was cancelled.
        let (res, _) = server.send_all(&b"late"[..]).await;
        res.unwrap();
        let got = recv_exact(&client, 4).await.unwrap();
        assert_eq!(got, b"late");

        // And closable while a recv is in flight: drop the future, then the stream.
        let res = timeout(Duration::from_millis(10), client.recv()).await;
        assert!(res.is_err());
        drop(client);
        let eof = server.recv().await.unwrap();
        assert!(
            eof.is_empty(),
            "the fd was closed once the cancelled recv finished"
        );
    });
    // Everything cancelled has completed: only the runtime's own eventfd read is left.
    rt.block_on(async { sleep(Duration::from_millis(5)).await });
    assert_eq!(rt.in_flight(), 1, "no operation leaked");
}

#[test]
fn enobufs_falls_back_to_owned_buffers() {
    const CONNECTIONS: usize = 20;
    let rt = Runtime::new(RingOptions {
        entries: 128,
        recv_buffers: 2,
        recv_buffer_size: 64,
    })
    .unwrap();
    rt.block_on(async {
        let listener = Listener::bind(LOOPBACK, no_reuseport()).unwrap();
        let addr = listener.local_addr().unwrap();
        let kept: Rc<RefCell<Vec<RecvBuf>>> = Rc::new(RefCell::new(Vec::new()));
        let k = Rc::clone(&kept);
        spawn(async move {
            for _ in 0..CONNECTIONS {
                let (stream, _) = listener.accept().await.unwrap();
                let k = Rc::clone(&k);
                spawn(async move {
                    // Keep every buffer so the 2-buffer ring runs dry.
                    let buf = stream.recv().await.unwrap();
                    k.borrow_mut().push(buf);
                    let _ = stream;
                });
            }
        });
        let mut clients = Vec::new();
        for i in 0..CONNECTIONS {
            let client = TcpStream::connect(addr).await.unwrap();
            let (res, _) = client.send_all(format!("msg{i:02}")).await;
            res.unwrap();
            clients.push(client);
        }
        wait_until(|| kept.borrow().len() == CONNECTIONS).await;
        let kept = kept.borrow();
        let from_ring = kept.iter().filter(|b| b.is_from_ring()).count();
        assert!(from_ring <= 2, "{from_ring} buffers from a 2-buffer ring");
        let mut texts: Vec<String> = kept
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        texts.sort();
        let expected: Vec<String> = (0..CONNECTIONS).map(|i| format!("msg{i:02}")).collect();
        assert_eq!(texts, expected);
    });
}

#[test]
fn fallback_receive_survives_a_timeout() {
    let rt = Runtime::new(RingOptions {
        entries: 64,
        recv_buffers: 1,
        recv_buffer_size: 64,
    })
    .unwrap();
    rt.block_on(async {
        let listener = Listener::bind(LOOPBACK, no_reuseport()).unwrap();
        let addr = listener.local_addr().unwrap();
        let a = TcpStream::connect(addr).await.unwrap();
        let (a_server, _) = listener.accept().await.unwrap();
        let b = TcpStream::connect(addr).await.unwrap();
        let (b_server, _) = listener.accept().await.unwrap();
        // Connection A takes the ring's only buffer and keeps it.
        let (res, _) = a.send_all(&b"a"[..]).await;
        res.unwrap();
        let held = a_server.recv().await.unwrap();
        assert!(held.is_from_ring());
        // B's data arrives while the ring is empty and while nobody waits for it.
        // B's receive finds the ring empty and falls back to an owned buffer, and is
        // interrupted by a timeout before any data arrives.
        assert!(
            timeout(Duration::from_millis(10), b_server.recv())
                .await
                .is_err()
        );
        let (res, _) = b.send_all(&b"fallback"[..]).await;
        res.unwrap();
        // The interrupted receive kept its place: the bytes come out of the next call.
        let got = b_server.recv().await.unwrap();
        assert!(!got.is_from_ring());
        assert_eq!(&got[..], b"fallback");
        drop(held);
    });
}

#[test]
fn ring_buffers_are_returned_on_drop() {
    // 2 buffers, 50 sequential receives: only works if each RecvBuf goes back.
    let rt = Runtime::new(RingOptions {
        entries: 64,
        recv_buffers: 2,
        recv_buffer_size: 64,
    })
    .unwrap();
    rt.block_on(async {
        let (client, server) = connected_pair().await;
        for i in 0..50u8 {
            let (res, _) = client.send_all(vec![i; 8]).await;
            res.unwrap();
            let buf = recv_exact(&server, 8).await.unwrap();
            assert_eq!(buf, vec![i; 8]);
        }
        let (res, _) = client.send_all(vec![7; 8]).await;
        res.unwrap();
        let buf = server.recv().await.unwrap();
        assert!(buf.is_from_ring(), "buffers went back to the ring");
    });
}

#[test]
fn slow_reader_gets_every_chunk_in_order() {
    // More chunks than a multishot receive may queue: the runtime stops and re-arms it
    // without losing or reordering bytes.
    const CHUNKS: usize = 40;
    let rt = runtime();
    rt.block_on(async {
        let (client, server) = connected_pair().await;
        client.set_nodelay(true).unwrap();
        // Arm the multishot receive, then stop reading while chunks arrive.
        let (res, _) = client.send_all(&b"start"[..]).await;
        res.unwrap();
        assert_eq!(recv_exact(&server, 5).await.unwrap(), b"start");
        let mut expected = Vec::new();
        for i in 0..CHUNKS {
            let chunk = format!("<{i:03}>");
            expected.extend_from_slice(chunk.as_bytes());
            let (res, _) = client.send_all(chunk).await;
            res.unwrap();
            sleep(Duration::from_millis(1)).await;
        }
        client.shutdown_write().unwrap();
        let got = recv_exact(&server, usize::MAX).await.unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    });
    rt.block_on(sleep(Duration::from_millis(1)));
    assert!(rt.in_flight() <= 2, "{} operations left", rt.in_flight());
}

#[test]
fn notify_from_another_thread_wakes_the_shard() {
    let rt = runtime();
    let (handle, waiter) = notify_pair().unwrap();
    let notifier = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        handle.notify();
    });
    rt.block_on(async {
        timeout(TEST_DEADLINE, waiter.wait())
            .await
            .expect("notify woke the waiter");
    });
    notifier.join().unwrap();
}

#[test]
fn waker_called_from_another_thread_resumes_the_task() {
    let rt = runtime();
    let slot: Arc<Mutex<Option<Waker>>> = Arc::new(Mutex::new(None));
    let fired = Arc::new(AtomicBool::new(false));
    let (s, f) = (Arc::clone(&slot), Arc::clone(&fired));
    let other = std::thread::spawn(move || {
        loop {
            if let Some(w) = s.lock().unwrap().take() {
                f.store(true, Ordering::Release);
                w.wake();
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    rt.block_on(async {
        poll_fn(|cx| {
            if fired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *slot.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    });
    other.join().unwrap();
}

/// One shard of the reuseport test: binds `port` (0: any, reported on `port_tx`) and
/// counts accepted connections until `stop`.
fn reuseport_shard(
    port: u16,
    port_tx: std::sync::mpsc::Sender<u16>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let rt = runtime();
    rt.block_on(async move {
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let listener = Listener::bind(addr, ListenOptions::default()).unwrap();
        port_tx.send(listener.local_addr().unwrap().port()).unwrap();
        while !stop.load(Ordering::Acquire) {
            if let Ok(Ok(_conn)) = timeout(Duration::from_millis(5), listener.accept()).await {
                count.fetch_add(1, Ordering::AcqRel);
            }
        }
    });
}

#[test]
fn two_runtimes_share_a_port_with_reuseport() {
    let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let first = {
        let (tx, count, stop) = (port_tx.clone(), Arc::clone(&counts[0]), Arc::clone(&stop));
        std::thread::spawn(move || reuseport_shard(0, tx, count, stop))
    };
    let port = port_rx.recv().unwrap();
    let second = {
        let (tx, count, stop) = (port_tx.clone(), Arc::clone(&counts[1]), Arc::clone(&stop));
        std::thread::spawn(move || reuseport_shard(port, tx, count, stop))
    };
    assert_eq!(
        port_rx.recv().unwrap(),
        port,
        "both shards bound the same port"
    );
    let mut clients = Vec::new();
    let deadline = std::time::Instant::now() + TEST_DEADLINE;
    while counts.iter().any(|c| c.load(Ordering::Acquire) == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "both shards should accept"
        );
        if clients.len() < 256 {
            clients.push(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Release);
    first.join().unwrap();
    second.join().unwrap();
}

#[test]
fn steer_by_cpu_attaches_to_a_reuseport_group() {
    let rt = runtime();
    rt.block_on(async {
        let listener = Listener::bind(LOOPBACK, ListenOptions::default()).unwrap();
        listener.steer_by_cpu().unwrap();
        // With one socket in the group, CPU ids past index 0 fall back to hashing, so a
        // connection is still accepted.
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (_server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    });
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let port = {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let rt = runtime();
    let err = rt
        .block_on(TcpStream::connect(SocketAddr::new(
            Ipv4Addr::LOCALHOST.into(),
            port,
        )))
        .expect_err("nothing listens there");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
}

#[test]
fn sleeps_finish_in_deadline_order() {
    let rt = runtime();
    let order = Rc::new(RefCell::new(Vec::new()));
    rt.block_on(async {
        for ms in [30u64, 10, 20] {
            let order = Rc::clone(&order);
            spawn(async move {
                sleep(Duration::from_millis(ms)).await;
                order.borrow_mut().push(ms);
            });
        }
        sleep(Duration::from_millis(60)).await;
    });
    assert_eq!(*order.borrow(), vec![10, 20, 30]);
}

#[test]
fn timeout_returns_whichever_finishes_first() {
    let rt = runtime();
    rt.block_on(async {
        let slow = timeout(Duration::from_millis(10), sleep(Duration::from_millis(200))).await;
        assert_eq!(
            slow,
            Err(Elapsed {
                after: Duration::from_millis(10)
            })
        );
        let fast = timeout(Duration::from_millis(200), async {
            sleep(Duration::from_millis(10)).await;
            7
        })
        .await;
        assert_eq!(fast, Ok(7));
    });
    // The cancelled timers are gone: only the runtime's eventfd read remains.
    rt.block_on(sleep(Duration::from_millis(1)));
    assert_eq!(rt.in_flight(), 1);
}

#[test]
fn dropping_the_runtime_with_operations_in_flight_is_clean() {
    let rt = runtime();
    let listener = Rc::new(Listener::bind(LOOPBACK, no_reuseport()).unwrap());
    let addr = listener.local_addr().unwrap();
    let l = Rc::clone(&listener);
    rt.block_on(async move {
        let client = TcpStream::connect(addr).await.unwrap();
        spawn(async move {
            // Never completes: nobody sends.
            let _ = client.recv().await;
        });
        spawn(async move {
            let _ = l.accept().await;
            let _ = l.accept().await;
        });
        sleep(Duration::from_millis(5)).await;
    });
    assert!(rt.in_flight() >= 2);
    drop(rt);
    drop(listener);
}

#[test]
#[should_panic(expected = "outside Runtime::block_on")]
fn spawn_outside_block_on_panics() {
    spawn(async {});
}

#[test]
fn kernel_releases_parse() {
    assert_eq!(ring::parse_release("6.18.44-fc-v669"), Some((6, 18)));
    assert_eq!(ring::parse_release("5.15.0-91-generic"), Some((5, 15)));
    assert_eq!(ring::parse_release("garbage"), None);
    assert_eq!(ring::parse_release(""), None);
}

#[test]
fn setup_errors_say_why() {
    let e = SetupError::DisabledBySysctl {
        value: 2,
        meaning: "io_uring is disabled for every process",
    };
    assert!(e.to_string().contains("kernel.io_uring_disabled = 2"));
    assert!(SetupError::KernelTooOld.to_string().contains("ENOSYS"));
    let e = SetupError::Denied { sysctl: "0".into() };
    assert!(e.to_string().contains("seccomp"));
}

#[test]
fn timeouts_need_no_ring_operation_and_fire_in_deadline_order() {
    let rt = runtime();
    let before = rt.in_flight();
    rt.block_on(async {
        let started = std::time::Instant::now();
        // Nothing on the ring: only the deadline bounds the ring's wait.
        let res = timeout(Duration::from_millis(20), std::future::pending::<()>()).await;
        assert_eq!(
            res,
            Err(Elapsed {
                after: Duration::from_millis(20)
            })
        );
        assert!(started.elapsed() >= Duration::from_millis(20));
        let order = Rc::new(RefCell::new(Vec::new()));
        for ms in [30u64, 10, 20] {
            let order = Rc::clone(&order);
            crate::uring::spawn(async move {
                let _ = timeout(Duration::from_millis(ms), std::future::pending::<()>()).await;
                order.borrow_mut().push(ms);
            });
        }
        wait_until(|| order.borrow().len() == 3).await;
        assert_eq!(*order.borrow(), vec![10, 20, 30]);
    });
    assert_eq!(
        rt.in_flight(),
        before.max(1),
        "a timeout leaves no operation behind"
    );
}

#[test]
fn a_panicking_task_is_dropped_and_the_others_run_on() {
    let rt = runtime();
    let heard = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = heard.clone();
    rt.on_task_panic(move |message| sink.borrow_mut().push(message.to_owned()));
    let listener = Listener::bind(LOOPBACK, no_reuseport()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dropped = Rc::new(Cell::new(false));
    let echoed = rt.block_on(async {
        // The panicking task owns a socket and a flag that tells when it was dropped.
        struct Flag(Rc<Cell<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let flag = Flag(dropped.clone());
        spawn(async move {
            let _flag = flag;
            let _held = TcpStream::connect(addr).await;
            sleep(Duration::from_millis(1)).await;
            panic!("a bug in one connection");
        });
        spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                spawn(echo(stream));
            }
        });
        let client = TcpStream::connect(addr).await.expect("connect");
        sleep(Duration::from_millis(20)).await;
        let (sent, _) = client.send_all(b"still here".to_vec()).await;
        sent.expect("send");
        timeout(TEST_DEADLINE, recv_exact(&client, 10))
            .await
            .expect("echo in time")
            .expect("echo")
    });
    assert_eq!(echoed, b"still here");
    assert!(dropped.get(), "the panicked task was not dropped");
    assert_eq!(heard.borrow().as_slice(), ["a bug in one connection"]);
}

#[test]
fn a_critical_task_panic_ends_block_on() {
    let rt = runtime();
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            spawn_critical(async {
                sleep(Duration::from_millis(1)).await;
                panic!("the accept loop broke");
            });
            sleep(TEST_DEADLINE).await;
        })
    }));
    let payload = ended.expect_err("block_on returned normally");
    assert_eq!(panic_message(&*payload), "the accept loop broke");
}

#[test]
fn accepted_sockets_inherit_the_listeners_user_timeout() {
    let rt = runtime();
    let opts = ListenOptions {
        user_timeout: Some(Duration::from_millis(7500)),
        ..no_reuseport()
    };
    let listener = Listener::bind(LOOPBACK, opts).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (accepted, connected) = rt.block_on(async move {
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (
            server.user_timeout_ms().unwrap(),
            client.user_timeout_ms().unwrap(),
        )
    });
    assert_eq!(accepted, 7500);
    assert_eq!(connected, 0);
}

/// This process's CPU time (user, system): every thread, io_uring's io-wq workers
/// included, also those that ended (`/proc/self/stat` fields 14 and 15, in the
/// kernel's USER_HZ of 100).
fn process_cpu() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let tick = |t: u64| Duration::from_millis(t * 10);
    (tick(fields[0]), tick(fields[1]))
}

/// Relays `from` → `to` until `from` ends, then half-closes `to`: by receiving into
/// the buffer ring and sending that buffer (`splice` false, what
/// `proxy/passthrough.rs` does), or socket → pipe → socket with `IORING_OP_SPLICE`.
/// The bytes moved.
async fn relay_one_way(splice: bool, from: Rc<TcpStream>, to: Rc<TcpStream>) -> usize {
    const CHUNK: u32 = 64 * 1024;
    let mut moved = 0usize;
    if splice {
        let (pipe_r, pipe_w) = super::net::pipe().unwrap();
        loop {
            let n = super::net::splice(from.fd(), &pipe_w, CHUNK).await.unwrap();
            if n == 0 {
                break;
            }
            let mut left = n;
            while left > 0 {
                left -= super::net::splice(&pipe_r, to.fd(), left as u32)
                    .await
                    .unwrap();
            }
            moved += n;
        }
    } else {
        loop {
            let buf = from.recv().await.unwrap();
            if buf.is_empty() {
                break;
            }
            moved += buf.len();
            let (sent, _) = to.send_all(buf).await;
            sent.unwrap();
        }
    }
    let _ = to.shutdown_write();
    moved
}

/// Starts `python3 -c script` with stdout piped, and reads the first line it prints.
fn python(
    script: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
    String,
) {
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("a first line");
    (child, out, line.trim().to_owned())
}

/// The measurement behind ARCHITECTURE.md's choice of relay for TLS passthrough and
/// TCP: CPU time of this process (the relay: the endpoints are Python processes) for
/// 1 GiB from one loopback connection to another (bulk), and for 20,000 round trips of
/// a 200-byte message through the relay to an echo server and back (request/response),
/// with [`relay_one_way`]'s two ways. Run it with
/// `cargo test --release --lib uring::tests::relay_cpu_recv_send_against_splice -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check: run it by name with --ignored --nocapture"]
fn relay_cpu_recv_send_against_splice() {
    const BULK: usize = 1 << 30;
    const TRIPS: usize = 20_000;
    let report = |what: &str,
                  units: f64,
                  unit: &str,
                  elapsed: Duration,
                  (user, system): (Duration, Duration)| {
        let total = user + system;
        println!(
            "{what}: {elapsed:?}; relay CPU {total:?} (user {user:?}, system {system:?}) = {:.2} µs/{unit}",
            total.as_secs_f64() * 1e6 / units
        );
    };
    for splice in [false, true] {
        let mode = if splice { "splice" } else { "recv/send" };
        // Bulk: a sender and a counting receiver.
        let (mut receiver, mut out, port) = python(
            "import socket\nl=socket.socket(); l.bind(('127.0.0.1',0)); l.listen(1)\nprint(l.getsockname()[1], flush=True)\nc,_=l.accept(); n=0\nwhile True:\n  b=c.recv(1<<20)\n  if not b: break\n  n+=len(b)\nprint(n, flush=True)",
        );
        let to: SocketAddr = ([127, 0, 0, 1], port.parse().expect("a port")).into();
        let rt = Runtime::new(RingOptions::default()).expect("io_uring runtime");
        let (elapsed, cpu) = rt.block_on(async move {
            let listener = Listener::bind(LOOPBACK, no_reuseport()).unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut sender = std::process::Command::new("python3")
                .args(["-c", &format!("import socket\ns=socket.create_connection(('127.0.0.1',{port}))\nb=b'x'*65536\nfor _ in range({}): s.sendall(b)\ns.close()", BULK >> 16)])
                .spawn()
                .expect("python3");
            let (inbound, _) = listener.accept().await.unwrap();
            let outbound = TcpStream::connect(to).await.unwrap();
            let (u0, s0) = process_cpu();
            let t0 = std::time::Instant::now();
            let moved = relay_one_way(splice, Rc::new(inbound), Rc::new(outbound)).await;
            let result = (t0.elapsed(), { let (u1, s1) = process_cpu(); (u1 - u0, s1 - s0) });
            let _ = sender.wait();
            assert_eq!(moved, BULK);
            result
        });
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).expect("the receiver's count");
        let _ = receiver.wait();
        assert_eq!(line.trim(), BULK.to_string());
        report(&format!("{mode} bulk 1 GiB"), 1024.0, "MiB", elapsed, cpu);

        // Request/response: a client doing round trips, an echo server.
        let (mut echo, _, port) = python(
            "import socket\nl=socket.socket(); l.bind(('127.0.0.1',0)); l.listen(1)\nprint(l.getsockname()[1], flush=True)\nc,_=l.accept()\nc.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\nwhile True:\n  b=c.recv(65536)\n  if not b: break\n  c.sendall(b)\nc.close()",
        );
        let to: SocketAddr = ([127, 0, 0, 1], port.parse().expect("a port")).into();
        let rt = Runtime::new(RingOptions::default()).expect("io_uring runtime");
        let (elapsed, cpu) = rt.block_on(async move {
            let listener = Listener::bind(LOOPBACK, no_reuseport()).unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut client = std::process::Command::new("python3")
                .args(["-c", &format!("import socket\ns=socket.create_connection(('127.0.0.1',{port}))\ns.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\nm=b'y'*200\nfor _ in range({TRIPS}):\n  s.sendall(m); got=0\n  while got<200: got+=len(s.recv(200-got))\ns.close()")])
                .spawn()
                .expect("python3");
            let (inbound, _) = listener.accept().await.unwrap();
            let outbound = TcpStream::connect(to).await.unwrap();
            let _ = outbound.set_nodelay(true);
            let (inbound, outbound) = (Rc::new(inbound), Rc::new(outbound));
            let back_done = Rc::new(Cell::new(0usize));
            let (u0, s0) = process_cpu();
            let t0 = std::time::Instant::now();
            let done = back_done.clone();
            spawn(relay_back(splice, outbound.clone(), inbound.clone(), done));
            let there = relay_one_way(splice, inbound, outbound).await;
            wait_until(|| back_done.get() > 0).await;
            let result = (t0.elapsed(), { let (u1, s1) = process_cpu(); (u1 - u0, s1 - s0) });
            let _ = client.wait();
            assert_eq!((there, back_done.get()), (200 * TRIPS, 200 * TRIPS));
            result
        });
        let _ = echo.wait();
        report(
            &format!("{mode} {TRIPS} round trips of 200 bytes"),
            TRIPS as f64,
            "round trip",
            elapsed,
            cpu,
        );
    }
}

/// [`relay_one_way`] as a task of its own; `done` gets the bytes moved.
async fn relay_back(splice: bool, from: Rc<TcpStream>, to: Rc<TcpStream>, done: Rc<Cell<usize>>) {
    done.set(relay_one_way(splice, from, to).await);
}
