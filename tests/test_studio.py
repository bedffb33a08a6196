"""A studio server: users and roles, the fair queue, quotas, the admin RPCs, reloading users.

One real server for most of the module (the embedded text model and a tiny SD 1.5); each test
leaves its queue empty. Jobs are ordered by what the server did: JobInfo start times and
ListJobs' queue order, never by sleeping.
"""

from __future__ import annotations

import hashlib
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from artforge_client import ArtForgeError, Client
from artforge_client.v1 import image_pb2, jobs_pb2
from tests.conftest import REPO, start_server, stop_server
from tests.test_text_server import busy, running
from tests.tiny_pipelines import build_all

QUEUED, RUNNING, SUCCEEDED, CANCELLED = (
    jobs_pb2.JOB_STATE_QUEUED,
    jobs_pb2.JOB_STATE_RUNNING,
    jobs_pb2.JOB_STATE_SUCCEEDED,
    jobs_pb2.JOB_STATE_CANCELLED,
)
# Tokens of a job that holds the device until it is cancelled: minutes here, so no machine
# finishes it before the jobs a test queues behind it (the schema forbids an early end).
LONG = 4096
TOKENS = {name: f"{name}-token" for name in ("root", "alice", "bob", "carol", "dave", "quinn", "rita")}
USERS = f"""
[users.root]
token = "root-token"
role = "admin"

[users.alice]
token = "alice-token"

[users.bob]
token = "bob-token"

[users.carol]
token = "carol-token"
weight = 2

[users.dave]
token = "dave-token"

[users.quinn]
token_sha256 = "{hashlib.sha256(b"quinn-token").hexdigest()}"
max_queued_jobs = 2
max_image_pixels = 4096

[users.rita]
token = "rita-token"
device_seconds_per_hour = 3600
device_seconds_burst = 0.5
"""


def studio_config(tiny_sd15: Path, users: str = USERS) -> str:
    return f"""
[limits]
max_tokens = {LONG}
max_queue = 128

[model.tiny-sd15]
path = "{tiny_sd15}"
backend = "torch"

[images]
default_model = "tiny-sd15"

[text]
batch_size = 1  # one job at a time on the device: who goes next is what these tests look at
{users}
"""


@pytest.fixture(scope="module")
def studio(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    tiny = build_all(REPO / ".cache" / "tiny-models")
    server = start_server(models_dir, tmp_path_factory.mktemp("studio"), config=studio_config(tiny["tiny-sd15"]))
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def clients(studio) -> Iterator[dict[str, Client]]:
    opened = {name: studio.client(token=token) for name, token in TOKENS.items()}
    yield opened
    for client in opened.values():
        client.close()


@pytest.fixture(autouse=True)
def empty_queue(clients: dict[str, Client]) -> Iterator[None]:
    """Each test starts and ends with nothing queued or running."""
    yield
    root = clients["root"]
    for job in root.list_jobs(all_users=True).jobs:
        root.cancel(job.job_id)
    deadline = time.monotonic() + 120
    while root.list_jobs(all_users=True).jobs:
        assert time.monotonic() < deadline, "jobs still in flight after cancelling them"
        time.sleep(0.1)


def short(client: Client, prompt: str = "Name a colour.", max_tokens: int = 8, **kwargs) -> object:
    return client.generate_text(prompt, max_tokens=max_tokens, temperature=0, **kwargs)


def finish_all(streams: list) -> None:
    for stream in streams:
        stream.wait()


def queue_order(admin: Client) -> list[str]:
    """Owners of the queued jobs, in the order the policy will start them."""
    return [job.owner for job in admin.list_jobs(all_users=True).jobs if job.state == QUEUED]


def wait_queued(admin: Client, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(queue_order(admin)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} jobs queued"
        time.sleep(0.05)


# -- the fair queue -----------------------------------------------------------------------------


def test_a_second_user_starts_after_at_most_one_more_of_the_first_users_twenty(clients):
    alice, bob, root = clients["alice"], clients["bob"], clients["root"]
    blocker = running(busy(root, max_tokens=LONG))  # holds the device while both queue (short jobs would finish as they come)
    theirs = [short(alice, label=f"alice {i}") for i in range(20)]
    wait_queued(root, 20)
    mine = [short(bob, label=f"bob {i}") for i in range(2)]
    wait_queued(root, 22)
    blocker.cancel()
    finish_all(theirs + mine)
    ids = {stream.job_id for stream in theirs + mine}
    done = [job for job in root.list_jobs(all_users=True, include_finished=True, limit=1000).jobs if job.job_id in ids]
    assert len(done) == 22 and all(job.state == SUCCEEDED for job in done)
    bob_submitted = min(job.submitted_at for job in done if job.owner == "bob")
    bob_first = min(job.started_at for job in done if job.owner == "bob")
    alice_between = [job for job in done if job.owner == "alice" and bob_submitted < job.started_at < bob_first]
    assert len(alice_between) <= 1, f"{len(alice_between)} of alice's jobs started between bob's submission and his first start"


def test_weights_two_to_one_split_the_charged_device_time_two_to_one(clients):
    carol, dave, root = clients["carol"], clients["dave"], clients["root"]

    def charged() -> dict[str, float]:
        return {user.user: user.device_seconds_charged for user in root.server_stats().users}

    before = charged()
    blocker = running(busy(root, max_tokens=LONG))  # both queues fill before either starts
    # Jobs of one length (the schema forbids an early end), 48 each: both stay queued throughout.
    streams = [busy(who, max_tokens=24) for _ in range(48) for who in (carol, dave)]
    wait_queued(root, 96)
    blocker.cancel()
    deadline = time.monotonic() + 300
    while True:  # until 45 jobs have started (about 30 of carol's, 15 of dave's), both still queued
        now = charged()
        carol_s, dave_s = now["carol"] - before.get("carol", 0.0), now["dave"] - before.get("dave", 0.0)
        queued = queue_order(root)
        assert {"carol", "dave"} <= set(queued), f"a queue ran dry: carol {carol_s:.1f} s, dave {dave_s:.1f} s"
        if len(queued) <= 96 - 45:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    del streams  # the rest are cancelled after the test
    print(f"charged device-seconds: carol (weight 2) {carol_s:.2f}, dave (weight 1) {dave_s:.2f}, ratio {carol_s / dave_s:.3f}")
    assert abs(carol_s / dave_s - 2.0) <= 2.0 * 0.15


def test_an_artists_priority_reorders_only_their_own_jobs(clients):
    alice, bob, root = clients["alice"], clients["bob"], clients["root"]
    blocker = running(busy(root, max_tokens=LONG))
    low = []
    for i in range(3):  # one at a time: concurrent calls may reach the server in any order
        low.append(short(bob, priority=-5, label=f"bob low {i}"))
        wait_queued(root, i + 1)
    normal = [short(alice, label=f"alice {i}") for i in range(3)]
    wait_queued(root, 6)
    before = queue_order(root)
    assert before.index("alice") < 3, f"users take turns, not first come first served: {before}"
    urgent = short(bob, priority=0, label="bob urgent")
    wait_queued(root, 7)
    after = [job for job in root.list_jobs(all_users=True).jobs if job.state == QUEUED]
    # Bob's priority-0 job goes ahead of his own earlier, lower ones...
    assert [job.label for job in after if job.owner == "bob"] == ["bob urgent", "bob low 0", "bob low 1", "bob low 2"]
    # ...and takes bob's next turn: alice's places do not move.
    assert [job.owner for job in after][:6] == before, (before, [job.owner for job in after])
    with pytest.raises(ArtForgeError) as refused:
        short(alice, priority=1).wait()
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "options.priority" in refused.value.message
    blocker.cancel()
    del low, normal, urgent


def test_an_admin_band_runs_before_everyone_and_artists_may_not_use_it(clients):
    alice, root = clients["alice"], clients["root"]
    assert root.server_info().limits.max_priority > 0 and alice.server_info().limits.max_priority == 0
    blocker = running(busy(root, max_tokens=LONG))
    theirs = [short(alice) for _ in range(2)]
    wait_queued(root, 2)
    urgent = short(root, priority=5, label="urgent")
    wait_queued(root, 3)
    assert [job.label for job in root.list_jobs(all_users=True).jobs if job.state == QUEUED] == ["urgent", "", ""]
    blocker.cancel()
    del theirs, urgent


def test_queued_events_carry_an_estimated_wait_once_jobs_were_measured(clients):
    alice, root = clients["alice"], clients["root"]
    finish_all([short(root, max_tokens=64)])  # measured: the kind and model are known from here
    blocker = running(busy(root, max_tokens=LONG))
    stream = short(alice)
    queued = next(event for event in stream if event.HasField("queued"))
    assert queued.queued.position == 0 and queued.queued.estimated_wait_seconds > 0
    blocker.cancel()
    stream.wait()


# -- quotas -----------------------------------------------------------------------------------


def test_max_queued_jobs_refuses_the_next_job_with_its_sentence(clients):
    quinn, root = clients["quinn"], clients["root"]
    blocker = running(busy(root, max_tokens=LONG))
    kept = [short(quinn) for _ in range(2)]
    wait_queued(root, 2)
    with pytest.raises(ArtForgeError) as refused:
        short(quinn).wait()
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    message = refused.value.message
    assert "quota max_queued_jobs" in message and "2 jobs queued at once" in message and "frees when" in message, message
    stats = quinn.server_stats()
    assert [user.user for user in stats.users] == ["quinn"], "an artist sees only their own row"
    assert stats.users[0].queued_jobs == 2 and stats.users[0].queued_jobs_left == 0
    blocker.cancel()
    finish_all(kept)
    short(quinn).wait()  # places free as jobs start


def test_max_image_pixels_refuses_a_larger_image(clients):
    quinn = clients["quinn"]
    assert quinn.server_info().limits.max_image_pixels == 4096
    with pytest.raises(ArtForgeError) as refused:
        quinn.generate_image(image_pb2.GenerateImageRequest(prompt="moss", width=64, height=128, steps=1)).wait()
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "quota max_image_pixels" in refused.value.message and "8192" in refused.value.message
    done = quinn.generate_image(image_pb2.GenerateImageRequest(prompt="moss", width=64, height=64, steps=1))
    assert done.wait().state == SUCCEEDED


def test_the_device_time_bucket_refuses_then_refills(clients):
    rita = clients["rita"]
    first = busy(rita, max_tokens=512)  # the bucket holds 0.5 s; this job takes several times that
    first.wait()
    with pytest.raises(ArtForgeError) as refused:
        short(rita).wait()
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    message = refused.value.message
    assert "quota device_seconds_per_hour" in message and "3600 device-seconds an hour" in message and "frees in about" in message
    row = rita.server_stats().users[0]
    assert row.device_seconds_left < 0 and row.device_seconds_last_hour >= first.finished.usage.device_seconds > 0
    deadline = time.monotonic() + 120  # 1 device-second a second comes back
    while rita.server_stats().users[0].device_seconds_left <= 0:
        assert time.monotonic() < deadline, "the bucket did not refill"
        time.sleep(0.5)
    assert short(rita).wait().state == SUCCEEDED


# -- the admin view -----------------------------------------------------------------------------


def test_an_admin_lists_and_cancels_anyones_job_and_an_artist_cannot(clients):
    alice, bob, root = clients["alice"], clients["bob"], clients["root"]
    blocker = running(busy(root, max_tokens=LONG))
    secret = "a secret prompt about bob's unreleased character"
    bobs = short(bob, prompt=secret, label="bob's job")
    alices = short(alice)
    wait_queued(root, 2)

    everyone = root.list_jobs(all_users=True)
    assert {job.owner for job in everyone.jobs} == {"root", "alice", "bob"}
    bobs_id = next(job.job_id for job in everyone.jobs if job.owner == "bob")
    mine = alice.list_jobs()
    assert [job.owner for job in mine.jobs] == ["alice"]
    assert (mine.others_queued, mine.others_running) == (1, 1)
    assert secret.encode() not in mine.SerializeToString() and bobs_id.encode() not in mine.SerializeToString()
    for call in (lambda: alice.list_jobs(all_users=True), lambda: alice.cancel(bobs_id), lambda: alice.get_job(bobs_id)):
        with pytest.raises(ArtForgeError) as denied:
            call()
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(ArtForgeError) as denied:
        alice.watch(bobs_id).wait()
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED

    cancelled = root.cancel(bobs_id)
    assert cancelled.state == CANCELLED and cancelled.owner == "bob"
    with pytest.raises(ArtForgeError) as ended:
        bobs.wait()
    assert ended.value.code == grpc.StatusCode.CANCELLED and "by root (admin)" in ended.value.message
    stats = root.server_stats()
    assert {"root", "alice", "bob", "carol", "dave", "quinn", "rita"} <= {user.user for user in stats.users}
    assert stats.queue_policy == "fair" and stats.caller == "root"
    blocker.cancel()
    alices.wait()


def test_cli_jobs_cancel_and_stats(studio, clients, capsys):
    from artforge.cli import main

    alice, root = clients["alice"], clients["root"]
    blocker = running(busy(root, max_tokens=LONG))
    queued = short(alice, label="cli check")
    job_id = next(iter(queued)).job_id
    address = ["--address", studio.address]
    assert main(["jobs", *address, "--token", TOKENS["alice"]]) == 0
    listed = capsys.readouterr().out
    assert job_id in listed and "cli check" in listed and blocker.job_id not in listed and "1 running jobs of other users" in listed
    assert main(["jobs", "--all", *address, "--token", TOKENS["alice"]]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert main(["stats", *address, "--token", TOKENS["root"]]) == 0
    stats = capsys.readouterr().out
    assert "quinn  artist" in stats
    assert re.search(r"^cpu\s+yes\s+\S.*smollm2-135m-instruct\s+CPU, ", stats, re.MULTILINE), "the device, busy, with its model"
    assert main(["cancel", job_id, *address, "--token", TOKENS["root"]]) == 0
    assert root.get_job(job_id).state == CANCELLED
    blocker.cancel()


# -- restarts and reloads ---------------------------------------------------------------------


def test_kill_9_with_two_users_queued_resumes_their_order(models_dir, tmp_path):
    tiny = build_all(REPO / ".cache" / "tiny-models")
    config = studio_config(tiny["tiny-sd15"])
    server = start_server(models_dir, tmp_path, config=config)
    with server.client(token=TOKENS["root"]) as root:
        blocker = running(busy(root, max_tokens=512, keep=True))
        with server.client(token=TOKENS["alice"]) as alice, server.client(token=TOKENS["bob"]) as bob:
            streams = [short(alice, label=f"alice {i}", keep=True) for i in range(3)]
            wait_queued(root, 3)
            streams += [short(bob, label=f"bob {i}", keep=True) for i in range(3)]
            wait_queued(root, 6)
            planned = [job.label for job in root.list_jobs(all_users=True).jobs if job.state == QUEUED]
            assert [label.split()[0] for label in planned] == ["alice", "bob"] * 3
        server.process.kill()
        server.process.wait()
    server = start_server(models_dir, tmp_path, config=config)
    try:
        with server.client(token=TOKENS["root"]) as root:
            # The interrupted job runs again first (512 tokens: seconds); behind it, the turns
            # the queue had announced, alice and bob alternating.
            resumed = root.list_jobs(all_users=True).jobs
            assert resumed[-1].job_id == blocker.job_id and resumed[-1].state == RUNNING
            assert [job.label for job in resumed if job.state == QUEUED] == planned
            deadline = time.monotonic() + 300
            while root.list_jobs(all_users=True).jobs:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            done = root.list_jobs(all_users=True, include_finished=True).jobs
            assert sorted(job.label for job in done if job.state == SUCCEEDED) == sorted(["", *planned])
    finally:
        stop_server(server)


def test_sighup_reloads_the_users_file_and_keeps_queued_jobs(models_dir, tmp_path):
    users_file = tmp_path / "users.toml"
    users_file.write_text('[users.root]\ntoken = "root-token"\nrole = "admin"\n\n[users.alice]\ntoken = "alice-token"\n')
    config = f'[limits]\nmax_tokens = {LONG}\n\n[auth]\nusers_file = "{users_file}"\n'
    server = start_server(models_dir, tmp_path, config=config)
    try:
        with server.client(token=TOKENS["root"]) as root, server.client(token=TOKENS["alice"]) as alice:
            blocker = running(busy(root, max_tokens=LONG))
            kept_id = next(iter(short(alice, keep=True))).job_id
            users_file.write_text('[users.root]\ntoken = "root-token"\nrole = "admin"\n\n[users.bob]\ntoken = "bob-token"\nweight = 3\n')
            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while "reloaded the users" not in server.log():
                assert time.monotonic() < deadline
                time.sleep(0.1)
            with pytest.raises(ArtForgeError) as refused:
                alice.list_jobs()
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
            with server.client(token="bob-token") as bob:
                assert bob.server_stats().users[0].weight == 3
            users_file.write_text("[users.root]\ntoken = 5\n")  # a broken file keeps the users as they were
            server.process.send_signal(signal.SIGHUP)
            while "kept the users as they were" not in server.log():
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert root.list_jobs(all_users=True).jobs
            blocker.cancel()
            deadline = time.monotonic() + 60
            while (job := root.get_job(kept_id)).state in (QUEUED, RUNNING):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert job.state == SUCCEEDED, "a job queued before the reload still ran"
    finally:
        stop_server(server)


# -- several devices ----------------------------------------------------------------------------


def started_on(stream) -> str:
    """The device a job started on (its stream read to the end)."""
    device = next(event.started.device for event in stream if event.HasField("started"))
    stream.wait()
    return device


def test_two_devices_prefer_the_one_with_the_model_and_cap_a_users_running_jobs(models_dir, tmp_path):
    tiny = build_all(REPO / ".cache" / "tiny-models")
    users = USERS + '\n[users.ivy]\ntoken = "ivy-token"\nmax_running_jobs = 1\n'
    config = studio_config(tiny["tiny-sd15"], users).replace("[limits]", '[server]\ndevices = ["cpu:0", "cpu:1"]\n\n[limits]', 1)
    server = start_server(models_dir, tmp_path, config=config)  # the text model is preloaded on both, the image model on none
    try:
        with server.client(token=TOKENS["root"]) as root, server.client(token="ivy-token") as ivy:
            small = image_pb2.GenerateImageRequest(prompt="moss", width=64, height=64, steps=1)
            # A text job takes the device first in line, the image job the other one; the text job
            # is cancelled once the image job has finished, so its device is idle last.
            text = running(busy(root, max_tokens=LONG))  # outlasts any image job here
            text_device = next(job.device for job in root.list_jobs(all_users=True).jobs if job.state == RUNNING)
            image_device = started_on(root.generate_image(small))
            assert image_device != text_device
            text.cancel()
            with pytest.raises(ArtForgeError) as cancelled:
                text.wait()
            assert cancelled.value.code == grpc.StatusCode.CANCELLED
            # Both idle now, and the text job's device, the last to finish, is first in line for
            # the next job (idle workers are woken in the order they began to wait): an image job
            # goes to the device that has the image model loaded even so.
            assert started_on(root.generate_image(small)) == image_device

            # Ivy may run one job at a time: her second waits though a device is free...
            mine = [running(busy(ivy, max_tokens=LONG))]
            mine.append(busy(ivy, max_tokens=16))
            wait_queued(root, 1)
            states = {job.state for job in root.list_jobs(all_users=True).jobs if job.owner == "ivy"}
            assert states == {RUNNING, QUEUED}
            # ...and another user's job takes that free device.
            assert started_on(short(root)) != ""
            assert [job.state for job in root.list_jobs(all_users=True).jobs if job.owner == "ivy"] == [QUEUED, RUNNING]
            for job in root.list_jobs(all_users=True).jobs:
                root.cancel(job.job_id)
            del mine
    finally:
        stop_server(server)
