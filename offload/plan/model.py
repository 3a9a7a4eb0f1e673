"""The plan's types: what the queue-time plan decides for each gateway, with named fields, and its one
serialised form (the JSON in the gateway's hidden ``gpugeek_plan`` input, read back at run time)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .. import texts

LOCAL, CLOUD, REFUSED = "local", "cloud", "refused"   # a gateway's mode
PASS, IMAGE, MASK = "pass", "image", "mask"          # what a gateway output carries
LITERAL, URL = "literal", "url"                      # crossings in, besides IMAGE and MASK


class Refusal(texts.Said):
    """Why a gateway cannot be sent: a sentence of ``locales/<lang>/server.json`` (``key``) and its values."""


@dataclass
class CloudOutput:
    """Gateway output ``slot``: an image or mask the cloud saves as node ``save``, made by ``source`` (node id,
    output slot); or ``pass``: the gateway's own input ``input``, passed through."""
    slot: int
    kind: str
    source: tuple | None = None
    input: str = ""
    save: str = ""


@dataclass
class Crossing:
    """A value from a boundary (an Upload Image, another gateway) into the cloud part, as the gateway's hidden
    input ``input``. ``literal``: a plain value written into ``targets`` (node id, input name); ``url``: the
    address an Upload Image made, read by ``loader``; ``image``/``mask``: a tensor uploaded and read by ``loader``."""
    kind: str
    source: tuple
    input: str = ""
    loader: str = ""
    targets: list = field(default_factory=list)


@dataclass
class LocalFile:
    """A file a cloud loader reads that is on this machine (offload/plan/kinds.py): uploaded, then the loader's
    ``input`` (its ``key`` in that input's dict, where one is named) pointed at it."""
    node: str
    file: str
    input: str = "image"
    key: str = ""


@dataclass
class GatewayPlan:
    """What one gateway does at run time. The leading gateway of a cloud part carries the part itself (its
    prompt, crossings, files, members); a merged member only its own outputs and the hashes."""
    gateway: str
    mode: str
    lead: str = ""
    lang: str = "en"
    outputs: list = field(default_factory=list)          # [CloudOutput]
    refusals: list = field(default_factory=list)         # [str], sentences in ``lang``
    nodes: list = field(default_factory=list)            # ids of the cloud part (the editor marks them)
    prompt: dict | None = None                           # the cloud part's own API prompt (leading gateway)
    crossings: list = field(default_factory=list)        # [Crossing]
    local_files: list = field(default_factory=list)      # [LocalFile]
    user_outputs: list = field(default_factory=list)     # cloud output nodes whose files come back
    members: list = field(default_factory=list)          # gateways sharing this task, the lead first
    hash: str = ""                                       # identity of the part (journal history)
    shape: str = ""                                      # the part without seeds, texts, file names
    form: str = ""                                       # ... and without sizes and steps
    work: float | None = None                            # pixels x steps, where the part names them
    whole: bool = False                                  # the whole workflow: user_outputs are shown on
    #                                                      their own (Cloud Output) nodes, not on a gateway

    @property
    def leads(self) -> bool:
        return self.mode == CLOUD and self.lead == self.gateway

    @property
    def followers(self) -> list:
        return [g for g in self.members if g != self.gateway]

    @property
    def saves(self) -> list:
        return [o.save for o in self.outputs if o.save]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "GatewayPlan":
        raw = json.loads(text)
        if not isinstance(raw, dict) or "mode" not in raw:
            raise ValueError("not a gateway plan")
        raw["outputs"] = [CloudOutput(**dict(o, source=_pair(o.get("source")))) for o in raw.get("outputs") or []]
        raw["crossings"] = [Crossing(**dict(c, source=_pair(c.get("source")))) for c in raw.get("crossings") or []]
        raw["local_files"] = [LocalFile(**f) for f in raw.get("local_files") or []]
        return cls(**raw)


def _pair(v):
    return (str(v[0]), int(v[1])) if v else None


def refused_plan(gateway: str, sentences: list, lang: str = "en", nodes: list | None = None) -> GatewayPlan:
    return GatewayPlan(gateway=gateway, mode=REFUSED, lang=lang, refusals=list(sentences), nodes=list(nodes or []))
