"""Fake stooq + AlphaVantage for .ci/api-fuzz, speaking their wire formats from the fixtures of
crates/quotes (the same answers as bourse_quotes::fake): known codes get their quote, any other
the providers' own "unknown symbol" answer. Usage: python3 fake-quotes.py PORT"""

import http.server
import pathlib
import sys
import urllib.parse

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "crates/quotes/fixtures"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if url.path == "/q/l/":
            code = query.get("s", "").lower()
            known = FIXTURES / "stooq" / f"{code}.csv"
            if code and "/" not in code and known.is_file():
                body = known.read_text()
            else:
                unknown = (FIXTURES / "stooq" / "unknown.csv").read_text()
                body = unknown.replace("{SYMBOL}", code.upper())
            self.answer("text/csv", body)
        elif url.path == "/query":
            symbol = query.get("symbol", "").lower()
            name = "ibm.json" if symbol == "ibm" else "error.json"
            self.answer("application/json", (FIXTURES / "alphavantage" / name).read_text())
        else:
            self.send_error(404)

    def answer(self, content_type, body):
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
