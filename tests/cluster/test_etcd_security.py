"""router.cluster.etcd with etcd's auth and with TLS, against real single-member
clusters: the right password works, a wrong one fails naming the user (never the
password), an expired token is renewed; a TLS member is reached with the CA and client
certificate of the config, and refused without them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from router.cluster.etcd import EtcdClient, EtcdError, EtcdUnavailable
from router.config.sections import EtcdConfig

from .conftest import EtcdFactory
from .etcdkit import EtcdCluster, make_tls

pytestmark = pytest.mark.timeout(90)

PASSWORD = "s3cret-Pw"


def enable_auth(cluster: EtcdCluster) -> None:
    cluster.etcdctl("user", "add", f"root:{PASSWORD}")
    cluster.etcdctl("role", "add", "root")
    cluster.etcdctl("user", "grant-role", "root", "root")
    cluster.etcdctl("auth", "enable")


async def test_auth_right_and_wrong_password(etcd_factory: EtcdFactory) -> None:
    cluster = etcd_factory(1)
    enable_auth(cluster)
    good = EtcdClient(cluster.endpoints, username="root", password=PASSWORD)
    wrong = EtcdClient(cluster.endpoints, username="root", password="not-the-password")
    anonymous = EtcdClient(cluster.endpoints)
    try:
        rev = await good.put("/auth/k", b"v")
        kv = await good.get("/auth/k")
        assert kv is not None and kv.mod_revision == rev
        with pytest.raises(EtcdError) as caught:
            await wrong.put("/auth/k", b"x")
        message = str(caught.value)
        assert not isinstance(caught.value, EtcdUnavailable)
        assert "authentication as 'root' failed" in message and "invalid user ID or password" in message
        assert "not-the-password" not in message and "not-the-password" not in repr(caught.value)
        with pytest.raises(EtcdError, match="user name is empty"):
            await anonymous.put("/auth/k", b"x")
        assert (await good.get("/auth/k")).value == b"v"  # type: ignore[union-attr]
    finally:
        for c in (good, wrong, anonymous):
            await c.close()


async def test_invalidated_auth_token_is_renewed(etcd_factory: EtcdFactory) -> None:
    cluster = etcd_factory(1)
    enable_auth(cluster)
    client = EtcdClient(cluster.endpoints, username="root", password=PASSWORD)
    try:
        await client.put("/auth/k", b"1")
        token = client._token
        assert token is not None
        # Turning auth off and on again drops every token etcd handed out.
        cluster.etcdctl(f"--user=root:{PASSWORD}", "auth", "disable")
        cluster.etcdctl("auth", "enable")
        async with aiohttp.ClientSession() as raw, raw.post(
            f"{cluster.endpoints[0]}/v3/kv/range", json={"key": "YQ=="}, headers={"Authorization": token}
        ) as resp:
            assert resp.status == 401 and "invalid auth token" in await resp.text()
        await client.put("/auth/k", b"2")  # renewed once, transparently
        assert client._token is not None and client._token != token
        assert (await client.get("/auth/k")).value == b"2"  # type: ignore[union-attr]
        # A watch opened with a stale token renews it too.
        cluster.etcdctl(f"--user=root:{PASSWORD}", "auth", "disable")
        cluster.etcdctl("auth", "enable")
        stream = client.watch("/auth/k", start_revision=1)
        batch = await asyncio.wait_for(anext(stream), 10)
        assert [e.kv.value for e in batch] == [b"1", b"2"]
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await client.close()


async def test_tls_with_ca_and_client_certificate(etcd_factory: EtcdFactory, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki")
    cluster = etcd_factory(1, tls=tls)
    assert cluster.endpoints[0].startswith("https://127.0.0.1:")
    cfg = EtcdConfig(
        endpoints=cluster.endpoints, ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.client_key
    )
    client = EtcdClient.from_config(cfg)
    no_ca = EtcdClient(cluster.endpoints, timeout=1.0)
    try:
        rev = await client.put("/tls/k", b"secure")
        assert (await client.get("/tls/k")).mod_revision == rev  # type: ignore[union-attr]
        assert (await client.status())["version"].startswith("3.")
        with pytest.raises(EtcdUnavailable, match=r"certificate verify failed|SSL"):
            await no_ca.get("/tls/k")
    finally:
        await client.close()
        await no_ca.close()
