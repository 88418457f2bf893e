//! The `packet` engine: frames sent as skbs through an AF_PACKET socket with `sendmmsg`.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::flood::{Bounds, Report};

/// Frames handed to the kernel per sendmmsg call.
const BATCH: usize = 64;

fn open_socket(iface: &str, ifindex: u32) -> Result<OwnedFd> {
    // SAFETY: plain socket creation; protocol 0 sends only and receives nothing.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!(
            "AF_PACKET socket: {} (needs root)",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `fd` is a socket just opened and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: addr is a valid sockaddr_ll of the given length.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        bail!("binding to {iface}: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sends `frames` in turn through `iface` until a bound is reached.
pub fn flood(iface: &str, ifindex: u32, frames: &[Vec<u8>], bounds: &Bounds) -> Result<Report> {
    let fd = open_socket(iface, ifindex)?;
    let mut iovecs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    while sent < bounds.packets && started.elapsed() < bounds.duration {
        let want = (bounds.packets - sent).min(BATCH as u64) as usize;
        let mut msgs: Vec<libc::mmsghdr> = (0..want)
            .map(|i| {
                // SAFETY: mmsghdr is plain data; zeroed is valid before filling.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &mut iovecs[(next + i) % frames.len()];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: msgs points to `want` initialised headers whose iovecs outlive the call.
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), want as u32, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOBUFS) || err.raw_os_error() == Some(libc::EAGAIN)
            {
                std::thread::yield_now();
                continue;
            }
            bail!("sendmmsg: {err}");
        }
        sent += n as u64;
        next = (next + n as usize) % frames.len();
        if bounds.pps > 0 {
            let due = Duration::from_secs_f64(sent as f64 / bounds.pps as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    Ok(Report {
        sent,
        took: started.elapsed(),
        taken: None,
    })
}
