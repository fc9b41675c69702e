"""A file server on 127.0.0.1 that answers HTTP range requests (with a
strong ETag), for bench/remote.sh: what a model hub's CDN or an S3 HTTPS
endpoint does.

    python3 bench/range_server.py ROOT PORTFILE [SECONDS]

Writes the port it listens on to PORTFILE; stops after SECONDS (600).
"""
import hashlib
import http.server
import os
import sys
import threading

root = os.path.abspath(sys.argv[1])


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        p = os.path.abspath(os.path.join(root, self.path.lstrip("/").split("?")[0]))
        if not p.startswith(root + os.sep) or not os.path.isfile(p):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        st = os.stat(p)
        size = st.st_size
        etag = '"%s"' % hashlib.sha1(f"{p}:{st.st_mtime_ns}:{size}".encode()).hexdigest()
        rng = self.headers.get("Range")
        a, b = 0, size - 1
        if rng and rng.startswith("bytes="):
            lo, _, hi = rng[6:].partition("-")
            a = int(lo) if lo else max(0, size - int(hi))
            b = min(int(hi), size - 1) if (lo and hi) else size - 1
            if a >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
        else:
            self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(b - a + 1))
        self.end_headers()
        with open(p, "rb") as f:
            f.seek(a)
            left = b - a + 1
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def log_message(self, *a):
        pass


s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[2], "w").write(str(s.server_address[1]))
threading.Timer(float(sys.argv[3]) if len(sys.argv) > 3 else 600, s.shutdown).start()
s.serve_forever()
