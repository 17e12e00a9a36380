/*!
raspivid_mjpeg_server: JPEG frames on stdin, `multipart/x-mixed-replace` to
every HTTP client, from one single-threaded poll loop.

The pure parts (the splitter, HTTP parsing and framing, the test pattern)
do no I/O; [`server`] moves bytes between them and the sockets.
*/
#[macro_use]
pub mod log;
pub mod camera;
pub mod cli;
pub mod client;
pub mod deadlines;
pub mod frame;
pub mod guard;
pub mod http;
pub mod input;
pub mod limits;
pub mod notice;
pub mod offline;
pub mod pattern;
pub mod reader;
pub mod relay;
pub mod router;
pub mod server;
pub mod sock_diag;
pub mod source;
pub mod splitter;
pub mod stats;
pub mod supervisor;
pub mod systemd;
pub mod tcp;
pub mod upstream;
pub mod viewers;
