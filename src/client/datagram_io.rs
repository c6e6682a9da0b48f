//! A connected UDP socket as the `Read + Write` stream OpenSSL's DTLS client
//! drives (`SslStream`): one datagram per read and per write, never
//! blocking. Used by `ferroturn doctor`'s DTLS check and the DTLS tests.

use std::io::{self, Read, Write};
use std::sync::Arc;

use tokio::net::UdpSocket;

/// A connected, non-blocking UDP socket for a DTLS client engine. A read with
/// nothing waiting is `WouldBlock` (OpenSSL's WANT_READ); a write that finds
/// the send buffer full loses the datagram, as the network might, and the
/// handshake retransmits it.
pub struct DatagramIo(pub Arc<UdpSocket>);

impl Read for DatagramIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_recv(buf)
    }
}

impl Write for DatagramIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.try_send(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
