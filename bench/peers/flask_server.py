"""The common Flask MJPEG pattern (a generator per client, one thread each),
reading concatenated JPEGs from stdin: the baseline most tutorials teach.

    source | python3 flask_server.py PORT [HOST]

HOST defaults to 127.0.0.1.
"""
import sys
import threading

from flask import Flask, Response

app = Flask(__name__)
latest = None
cond = threading.Condition()


def read_stdin():
    global latest
    buf = b""
    stdin = sys.stdin.buffer
    while True:
        chunk = stdin.read1(65536)
        if not chunk:
            break
        buf += chunk
        while True:
            start = buf.find(b"\xff\xd8")
            end = buf.find(b"\xff\xd9", start + 2)
            if start < 0 or end < 0:
                break
            with cond:
                latest = buf[start:end + 2]
                cond.notify_all()
            buf = buf[end + 2:]


def frames():
    while True:
        with cond:
            cond.wait()
            frame = latest
        yield b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + frame + b"\r\n"


@app.route("/video.mjpg")
def video():
    return Response(frames(), mimetype="multipart/x-mixed-replace; boundary=frame")


@app.route("/snapshot.jpg")
def snapshot():
    with cond:
        frame = latest
    return Response(frame or b"", mimetype="image/jpeg")


if __name__ == "__main__":
    threading.Thread(target=read_stdin, daemon=True).start()
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    app.run(host=host, port=int(sys.argv[1]), threaded=True)
