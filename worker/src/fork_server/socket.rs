//! `SOCK_SEQPACKET` plumbing for the fork server's control channel: a private pair, or a listener
//! in a volume shared with the interpreter container; messages with fds attached as `SCM_RIGHTS`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::io::unix::AsyncFd;

pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two new descriptors into `fds`, which we then own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblocking(&ours)?;
    Ok((ours, theirs))
}

/// A non-blocking `SOCK_SEQPACKET` listener bound at `path` (a stale socket file is replaced),
/// connectable by any uid: who may connect is decided by the volume's mounts, and which
/// connection is served by [`super::listen`].
pub fn listen_at(path: &Path) -> io::Result<OwnedFd> {
    let socket = new_seqpacket()?;
    let address = unix_address(path)?;
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    // SAFETY: `address` is a valid sockaddr_un of the given length.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    let anyone = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o666);
    std::fs::set_permissions(path, anyone)?;
    // SAFETY: listen only changes the state of a socket we own.
    if unsafe { libc::listen(socket.as_raw_fd(), 8) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_nonblocking(&socket)?;
    Ok(socket)
}

/// A blocking connection to the listener at `path`.
pub fn connect_to(path: &Path) -> io::Result<OwnedFd> {
    let socket = new_seqpacket()?;
    let address = unix_address(path)?;
    // SAFETY: `address` is a valid sockaddr_un of the given length.
    let connected = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if connected != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// The next connection on `listener`, non-blocking and close-on-exec.
pub async fn accept(listener: &AsyncFd<OwnedFd>) -> io::Result<OwnedFd> {
    loop {
        let mut ready = listener.readable().await?;
        let accepted = ready.try_io(|socket| {
            // SAFETY: accept4 with null address arguments only returns a new descriptor.
            let fd = unsafe {
                libc::accept4(
                    socket.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                // SAFETY: accept4 just created this descriptor; nobody else owns it.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        });
        match accepted {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

fn new_seqpacket() -> io::Result<OwnedFd> {
    // SAFETY: socket returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn unix_address(path: &Path) -> io::Result<libc::sockaddr_un> {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = CString::new(path.as_os_str().as_bytes())?;
    let bytes = bytes.as_bytes_with_nul();
    if bytes.len() > address.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long", path.display()),
        ));
    }
    for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    Ok(address)
}

/// A pipe as (read end, write end), both close-on-exec.
pub fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own only reads and sets its status flags.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub async fn send_with_fds(
    control: &AsyncFd<OwnedFd>,
    bytes: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    loop {
        let mut ready = control.writable().await?;
        match ready.try_io(|socket| sendmsg_with_fds(socket.as_raw_fd(), bytes, fds)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

pub async fn recv(control: &AsyncFd<OwnedFd>, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = control.readable().await?;
        let received = ready.try_io(|socket| {
            // SAFETY: recv writes at most `buffer.len()` bytes into `buffer`.
            let n = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match received {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// One `sendmsg` of `bytes` with `fds` attached as `SCM_RIGHTS` (none when `fds` is empty).
pub fn sendmsg_with_fds(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.is_empty() {
        // SAFETY: send reads `bytes.len()` bytes from `bytes`.
        let sent = unsafe {
            libc::send(
                socket,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        return if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
    }
    let fds_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fds_bytes) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call, and the
    // control buffer holds exactly one cmsghdr of CMSG_LEN(fds_bytes) inside its CMSG_SPACE.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(fds_bytes) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast(), fds.len());
        if libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
