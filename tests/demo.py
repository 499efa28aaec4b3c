#!/usr/bin/env python3
"""Parlo's main job on one machine: a directory server and two phones on loopback.

Starts parlo-server on a free 127.x.y.z address with a database in a temporary directory,
then two phones: bob answers by himself (--auto-answer) and plays a recording of his own,
alice plays a short synthetic speech-like recording. Alice calls bob, they talk for a few
seconds, alice hangs up. Everything is stopped, then this prints what happened: each
phone's events, the call set-up time (dial -> connected) and whether each recording
arrived intact at the other end (sample for sample, apart from the delay of the path).

Exit status: 0 when the call went through and each recording arrived (every 512-sample
frame played exactly and in order; a glitch or two from the jitter buffer is reported but
tolerated), 1 when something did not work (the message says what), 2 on bad usage.

Only the Python standard library is used. Usage:
    demo.py SERVER_BINARY CLIENT_BINARY [--keep DIR]
"""

import ctypes
import math
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave

RATE = 8000
FRAME = 512
SECONDS = 3.0  # length of each recording
PATIENCE = 10.0  # longest wait for any event


class DemoFailed(Exception):
    pass


def speechlike(seconds, seed):
    """A voiced buzz with a gliding pitch, two moving formants and syllables, plus a
    little noise so that no stretch repeats (the comparison finds exactly one offset)."""
    rng = random.Random(seed)
    out = []
    phase = 0.0
    base = 120.0 + 40.0 * (seed % 3)
    for n in range(int(seconds * RATE)):
        t = n / RATE
        pitch = base + 50.0 * math.sin(2 * math.pi * 0.7 * t)
        phase += 2 * math.pi * pitch / RATE
        f1 = 500.0 + 300.0 * math.sin(2 * math.pi * 1.3 * t)
        f2 = 1500.0 + 600.0 * math.cos(2 * math.pi * 0.9 * t)
        voiced = 0.0
        for h in range(1, 13):
            f = pitch * h
            gain = (math.exp(-(((f - f1) / 250.0) ** 2))
                    + 0.6 * math.exp(-(((f - f2) / 350.0) ** 2)) + 0.05)
            voiced += gain * math.sin(phase * h)
        syllable = 0.35 + 0.65 * abs(math.sin(math.pi * 4.0 * t))
        value = 6000.0 * syllable * voiced + 600.0 * (rng.random() - 0.5)
        out.append(max(-32000, min(32000, int(value))))
    return out


def write_wav(path, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))


def read_wav(path):
    with wave.open(path, "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, RATE):
            raise DemoFailed(f"{path} is not 8 kHz mono 16-bit")
        data = w.readframes(w.getnframes())
    return [int.from_bytes(data[i:i + 2], "little", signed=True) for i in range(0, len(data), 2)]


def walk_frames(sent, received):
    """Follows the sent recording through the received one, 512-sample frame by frame.

    Returns (offset, played, missing, inserted): where the first frame found starts, how
    many sent frames were played exactly and in order, which were never played, and how
    many other frames (concealment, silence) were played between them. None if no frame
    of what was sent arrived.
    """
    frames = [sent[i:i + FRAME] for i in range(0, len(sent) - FRAME + 1, FRAME)]
    start = None
    for k, frame in enumerate(frames):
        offset = find(received, frame)
        if offset is not None:
            start = (k, offset)
            break
    if start is None:
        return None
    first, offset = start
    missing = list(range(first))
    played = inserted = 0
    pos = offset
    for k in range(first, len(frames)):
        if pos + FRAME > len(received):
            missing.extend(range(k, len(frames)))
            break
        for j in range(9):
            at = pos + j * FRAME
            if received[at:at + FRAME] == frames[k]:
                played += 1
                inserted += j
                pos = at + FRAME
                break
        else:
            missing.append(k)
    return offset, played, missing, inserted


def find(received, frame):
    first = frame[0]
    for offset in range(0, len(received) - len(frame) + 1):
        if received[offset] == first and received[offset:offset + len(frame)] == frame:
            return offset
    return None


def free_loopback():
    """A 127.x.y.z address nobody uses here (a TCP and a UDP port bind on it)."""
    rng = random.Random()
    for _ in range(100):
        ip = f"127.{rng.randint(100, 250)}.{rng.randint(0, 250)}.{rng.randint(2, 250)}"
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((ip, 0))
            return ip
        except OSError:
            continue
    raise DemoFailed("no free loopback address found")


def free_udp_port(ip):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def die_with_parent():
    """Runs in the child before exec: SIGKILL it if this script dies (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Process:
    """A child whose stdout (events) and stderr (log) are collected line by line."""

    def __init__(self, name, argv, pidfile, stdin=True):
        self.name = name
        self.argv = argv
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                preexec_fn=die_with_parent,
            )
        except OSError as e:
            raise DemoFailed(f"cannot start {argv[0]}: {e}") from e
        with open(pidfile, "a") as f:
            f.write(f"{self.proc.pid}\n")
        self.events = queue.Queue()
        self.out = []
        self.err = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.out, True),
                         daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err, False),
                         daemon=True).start()

    def _read(self, pipe, lines, events):
        for line in pipe:
            line = line.rstrip("\n")
            lines.append((time.monotonic(), line))
            if events:
                self.events.put((time.monotonic(), line))
        if events:
            self.events.put((time.monotonic(), None))

    def send(self, command):
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise DemoFailed(f"{self.name} does not read commands any more ({e})") from e

    def expect(self, kind, patience=PATIENCE):
        """Waits for the next event line whose first word is `kind`; returns (time, line)."""
        deadline = time.monotonic() + patience
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoFailed(f"{self.name}: no '{kind}' event within {patience:.0f} s\n"
                                 + self.transcript())
            try:
                at, line = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise DemoFailed(f"{self.name} exited before '{kind}'\n" + self.transcript())
            if line.split(" ", 1)[0].rstrip(":") == kind:
                return at, line

    def wait_log(self, needle, patience=PATIENCE):
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            for _, line in list(self.err):
                if needle in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise DemoFailed(f"{self.name}: no '{needle}' in its log\n" + self.transcript())

    def stop(self, how, patience=5.0):
        """Stops the process (`how` is a signal or a command line); returns its exit code."""
        if self.proc.poll() is None:
            if isinstance(how, str):
                try:
                    self.send(how)
                except DemoFailed:
                    pass
            else:
                self.proc.send_signal(how)
        try:
            return self.proc.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise DemoFailed(f"{self.name} did not stop within {patience:.0f} s; killed")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def transcript(self):
        out = "\n".join(f"  {l}" for _, l in self.out)
        err = "\n".join(f"  {l}" for _, l in self.err[-30:])
        return f"--- {self.name} events ---\n{out}\n--- {self.name} log (last lines) ---\n{err}"


def describe(direction, sent, received_path):
    """Returns (arrived, text): whether the recording arrived (every frame in order, at
    most a few glitches) and a sentence saying how exactly."""
    received = read_wav(received_path)
    walk = walk_frames(sent, received)
    frames = len(sent) // FRAME
    if walk is None:
        return False, (f"{direction}: NOT received ({len(received)} samples recorded, none "
                       f"of them a frame of what was sent)")
    offset, played, missing, inserted = walk
    delay = f"{offset} samples ({offset * 1000 / RATE:.0f} ms) into the recording"
    exact = received[offset:offset + len(sent)] == sent
    if exact:
        return True, (f"{direction}: intact: all {len(sent)} samples, sample for sample, "
                      f"starting {delay}")
    glitches = len(missing) + inserted
    arrived = played >= frames - 2 and glitches <= 4
    verdict = "arrived with glitches" if arrived else "DAMAGED"
    return arrived, (f"{direction}: {verdict}: {played} of {frames} frames played exactly "
                     f"and in order starting {delay}; missing: {missing or 'none'}; frames of "
                     f"concealment inserted by the jitter buffer: {inserted}")


def run(server_bin, client_bin, work):
    pidfile = os.path.join(work, "pids")
    alice_in = os.path.join(work, "alice-says.wav")
    bob_in = os.path.join(work, "bob-says.wav")
    alice_out = os.path.join(work, "alice-hears.wav")
    bob_out = os.path.join(work, "bob-hears.wav")
    alice_says = speechlike(SECONDS, 1)
    bob_says = speechlike(SECONDS, 2)
    write_wav(alice_in, alice_says)
    write_wav(bob_in, bob_says)
    print(f"parlo demo: {SECONDS:.0f} s synthetic speech for each phone in {work}")

    ip = free_loopback()
    server = Process("parlo-server", [server_bin, "--listen", f"{ip}:0",
                                      "--db", os.path.join(work, "directory.db")],
                     pidfile, stdin=False)
    processes = [server]
    try:
        line = server.wait_log("listening on ")
        server_addr = line.split("listening on ", 1)[1].split(",")[0].split()[0]
        print(f"parlo demo: directory server listening on {server_addr}")

        def phone(name, audio_in, audio_out, *flags):
            listen = f"{ip}:{free_udp_port(ip)}"
            p = Process(name, [client_bin, "--server", server_addr, "--name", name,
                               "--listen", listen, "--audio", f"file:{audio_in},{audio_out}",
                               *flags], pidfile)
            processes.append(p)
            return p, listen

        bob, bob_listen = phone("bob", bob_in, bob_out, "--auto-answer")
        alice, alice_listen = phone("alice", alice_in, alice_out)
        bob.expect("registered")
        alice.expect("registered")
        print(f"parlo demo: bob registered from {bob_listen} (answers by himself), "
              f"alice from {alice_listen}")

        dialed = time.monotonic()
        alice.send("call bob")
        connected, _ = alice.expect("connected")
        setup_ms = (connected - dialed) * 1000
        bob.expect("connected")
        print(f"parlo demo: alice called bob: connected in {setup_ms:.1f} ms")

        time.sleep(SECONDS + 1.0)
        alice.send("hangup")
        alice.expect("ended")
        bob.expect("ended")
        print("parlo demo: alice hung up")

        codes = {p.name: p.stop("quit") for p in (alice, bob)}
        codes["parlo-server"] = server.stop(signal.SIGTERM)
    finally:
        for p in processes:
            p.kill()

    print()
    for p in (alice, bob):
        print(f"{p.name}'s events:")
        for at, line in p.out:
            print(f"  +{(at - dialed) * 1000:8.1f} ms  {line}")
    print()
    ok_ab, text_ab = describe("alice -> bob", alice_says, bob_out)
    ok_ba, text_ba = describe("bob -> alice", bob_says, alice_out)
    print(f"audio {text_ab}")
    print(f"audio {text_ba}")
    print(f"call set-up (dial -> connected): {setup_ms:.1f} ms")
    failures = [f"{name} exited with {code}" for name, code in codes.items() if code != 0]
    if not ok_ab or not ok_ba:
        failures.append("the audio did not arrive")
    if failures:
        raise DemoFailed("; ".join(failures))
    if "intact" in text_ab and "intact" in text_ba:
        print("parlo demo: OK: the call went through and the audio arrived intact both ways")
    else:
        print("parlo demo: OK: the call went through and the audio arrived both ways, "
              "with the glitches listed above")


def main():
    args = sys.argv[1:]
    keep = None
    if "--keep" in args:
        i = args.index("--keep")
        keep = args[i + 1] if i + 1 < len(args) else None
        del args[i:i + 2]
        if keep is None:
            print(__doc__, file=sys.stderr)
            return 2
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2

    def stop(signum, _frame):
        raise DemoFailed(f"stopped by signal {signal.Signals(signum).name}")

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop)
    work = keep or tempfile.mkdtemp(prefix="parlo-demo-")
    os.makedirs(work, exist_ok=True)
    try:
        run(args[0], args[1], work)
        return 0
    except DemoFailed as e:
        print(f"parlo demo: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if keep is None:
            for name in os.listdir(work):
                os.remove(os.path.join(work, name))
            os.rmdir(work)


if __name__ == "__main__":
    sys.exit(main())
