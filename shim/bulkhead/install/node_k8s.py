"""The node label the RuntimeClass selects on, set and removed through the in-cluster API with
the installer's service account (stdlib HTTP: the runtime carries no Kubernetes client)."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bulkhead.install.ledger import InstallError

LABEL_KEY = "bulkhead.io/runtime"
LABEL_VALUE = "installed"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class InCluster:
    """The API server and the credentials a pod gets from its service account."""

    server: str
    token: str
    ca_file: Path


def in_cluster(environ: Mapping[str, str] = os.environ,
               account: Path = SERVICE_ACCOUNT) -> InCluster | None:
    """The in-cluster API, or None outside a pod with a mounted service account."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    token_file, ca_file = account / "token", account / "ca.crt"
    if not (host and port and token_file.is_file() and ca_file.is_file()):
        return None
    if ":" in host:  # an IPv6 service address
        host = f"[{host}]"
    return InCluster(f"https://{host}:{port}", token_file.read_text().strip(), ca_file)


def label_patch(installed: bool) -> dict[str, object]:
    """JSON merge patch: set the label, or remove it (null deletes a key in a merge patch)."""
    return {"metadata": {"labels": {LABEL_KEY: LABEL_VALUE if installed else None}}}


def label_request(cluster: InCluster, node: str, installed: bool) -> urllib.request.Request:
    """PATCH /api/v1/nodes/<node> with the label patch."""
    url = f"{cluster.server}/api/v1/nodes/{urllib.parse.quote(node, safe='')}"
    body = json.dumps(label_patch(installed)).encode()
    return urllib.request.Request(url, data=body, method="PATCH", headers={
        "Authorization": f"Bearer {cluster.token}",
        "Content-Type": MERGE_PATCH,
        "Accept": "application/json",
    })


def set_label(installed: bool, environ: Mapping[str, str] = os.environ,
              account: Path = SERVICE_ACCOUNT) -> str:
    """Apply the label patch to NODE_NAME's node; a message either way."""
    node = environ.get("NODE_NAME", "")
    cluster = in_cluster(environ, account)
    what = f"{LABEL_KEY}={LABEL_VALUE}" if installed else f"{LABEL_KEY}-"
    if not node or cluster is None:
        return (f"node label {what}: skipped (no NODE_NAME or no in-cluster service account; "
                f"outside Kubernetes run `kubectl label node <node> {what}`)")
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    try:
        with urllib.request.urlopen(label_request(cluster, node, installed), timeout=30,
                                    context=context) as reply:
            reply.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise InstallError(f"labelling node {node} ({what}) failed: HTTP {exc.code} {detail}"
                           ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise InstallError(f"labelling node {node} ({what}): {cluster.server}: {exc}") from None
    return f"node label {what}: applied to node {node}"
