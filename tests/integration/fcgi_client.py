"""fcgi_client.py — talk to an rg-fcgi socket without a web server, for tests.

request() sends one FastCGI request with cgi-fcgi (libfcgi-bin), setting the
CGI variables a web server would for BASE/api + path; stop() ends a process
the way a service manager does. Standard library only.
"""
import os
import re
import signal
import subprocess


def request(sock, method, path, body=b""):
    """(status, body text) of METHOD /api+path on the FastCGI socket sock."""
    env = dict(os.environ, REQUEST_METHOD=method, SCRIPT_NAME="/api", PATH_INFO=path,
               REQUEST_URI="/api" + path, SERVER_PROTOCOL="HTTP/1.1",
               CONTENT_LENGTH=str(len(body)))
    if body:
        env["CONTENT_TYPE"] = "application/json"
    p = subprocess.run(["cgi-fcgi", "-bind", "-connect", sock], env=env,
                       input=body, capture_output=True, timeout=30)
    head, _, payload = p.stdout.partition(b"\r\n\r\n")
    m = re.search(rb"^Status: (\d+)", head, re.M)
    return (int(m.group(1)) if m else 200), payload.decode()


def stop(proc, timeout_s=20):
    """SIGTERM, then SIGKILL if it has not exited within timeout_s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
