"""MediaWiki Action API fake (api.php): list=search and prop=extracts|info, formatversion 2."""

from __future__ import annotations

from .httpserver import Request, Response

PAGES = {
    1: ("Alan Turing", "Alan Turing was an English mathematician.\nHe worked at Bletchley Park."),
    2: ("Turing machine", "A Turing machine is a mathematical model of computation."),
    3: ("Turing Award", "The Turing Award is given by the ACM."),
}


def handler(request: Request) -> Response:
    q = request.query
    if request.path != "/w/api.php" or q.get("action") != "query" or q.get("format") != "json":
        return Response.json({"error": {"code": "badvalue", "info": "Unrecognized value"}})
    if "user-agent" not in request.headers:
        return Response(403, b"Please set a user-agent")
    if q.get("list") == "search":
        limit = int(q.get("srlimit", 10))
        hits = [
            {"ns": 0, "title": t, "pageid": pid, "snippet": ""}
            for pid, (t, _) in PAGES.items()
            if q["srsearch"].lower() in t.lower()
        ]
        return Response.json(
            {"batchcomplete": True, "query": {"searchinfo": {"totalhits": len(hits)}, "search": hits[:limit]}}
        )
    if q.get("prop") == "extracts|info":
        pages = []
        for pid in q["pageids"].split("|"):
            title, text = PAGES[int(pid)]
            pages.append(
                {
                    "pageid": int(pid),
                    "ns": 0,
                    "title": title,
                    "extract": text,
                    "fullurl": f"https://en.wikipedia.org/wiki/{title.replace(' ', '_')}",
                }
            )
        return Response.json({"batchcomplete": True, "query": {"pages": pages}})
    return Response.json({"error": {"code": "badvalue", "info": "Unrecognized parameter"}})
