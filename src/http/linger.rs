//! Closing a socket whose peer stopped reading. The HTTP dispatcher only finishes a
//! connection after flushing what it buffered, which never happens when the peer
//! does not read; docs/protocol.md section 9 wants the TCP connection closed within 5 s
//! all the same. We keep the raw socket (captured at accept) and, if that very
//! socket is still open after the grace period, reset the connection ourselves.

use std::time::Duration;

/// How long a closing socket may take to flush before it is reset.
pub const CLOSE_GRACE: Duration = Duration::from_secs(4);

/// A connection's file descriptor plus the kernel's socket cookie, so that a
/// descriptor number reused by a later connection is never touched.
#[derive(Debug, Clone, Copy)]
pub struct RawSocket {
    fd: i32,
    cookie: u64,
}

#[cfg(target_os = "linux")]
const SO_COOKIE: libc::c_int = 57;

impl RawSocket {
    #[cfg(target_os = "linux")]
    pub fn of(stream: &impl std::os::fd::AsRawFd) -> Option<RawSocket> {
        let fd = stream.as_raw_fd();
        cookie(fd).map(|cookie| RawSocket { fd, cookie })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn of<T>(_: &T) -> Option<RawSocket> {
        None
    }

    /// Reset the connection if it is still open (SO_LINGER 0, then shutdown): the
    /// dispatcher sees the socket fail and drops it, and the kernel sends RST instead
    /// of waiting on the peer. We work on a `dup` of the descriptor whose cookie we
    /// check, so a descriptor number that now names another connection is left alone.
    fn reset_if_open(&self) {
        #[cfg(target_os = "linux")]
        // SAFETY: socket calls on our own duplicate of the descriptor, closed at the end.
        unsafe {
            let fd = libc::dup(self.fd);
            if fd < 0 {
                return; // closed meanwhile: nothing to do
            }
            if cookie(fd) == Some(self.cookie) {
                tracing::debug!("closing socket did not finish in time: resetting it");
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
            libc::close(fd);
        }
    }
}

#[cfg(target_os = "linux")]
fn cookie(fd: i32) -> Option<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_COOKIE,
            &mut value as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// After `CLOSE_GRACE`, reset the connection if it is still open.
pub fn reset_if_stuck(socket: Option<RawSocket>) {
    let Some(socket) = socket else { return };
    actix_rt::spawn(async move {
        tokio::time::sleep(CLOSE_GRACE).await;
        socket.reset_if_open();
    });
}
