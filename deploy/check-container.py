"""Static checks of the container files (CI has no Docker engine): the Dockerfile is
multi-stage, builds with the README's release build, and runs as a non-root user; the compose
file is valid YAML with the gate, PostgreSQL and a backend, and keeps secrets out of itself."""
import pathlib
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
problems = []

docker = (root / "Dockerfile").read_text()
stages = [l for l in docker.splitlines() if l.startswith("FROM ")]
if len(stages) < 2:
    problems.append("Dockerfile: expected a multi-stage build")
if "cargo build --release" not in docker:
    problems.append("Dockerfile: does not use the README's release build")
users = [l.split()[1] for l in docker.splitlines() if l.startswith("USER ")]
if not users or users[-1].split(":")[0] in ("root", "0"):
    problems.append("Dockerfile: the final stage must run as a non-root USER")

compose = yaml.safe_load((root / "compose.yaml").read_text())
services = compose.get("services", {})
for name in ("gate", "postgres", "backend"):
    if name not in services:
        problems.append(f"compose.yaml: no `{name}` service")
gate_env = services.get("gate", {}).get("environment", {})
for secret in ("GATE_JWT_SECRET", "GATE_API_KEY_PEPPER", "GATE_BACKEND_JWT_SECRET"):
    if secret in gate_env:
        problems.append(f"compose.yaml: {secret} belongs in deploy/gate.env, not in the file")
if gate_env.get("GATE_ENVIRONMENT") != "production":
    problems.append("compose.yaml: the gate should run in production mode")
example = (root / "deploy" / "gate.env.example").read_text()
for secret in ("GATE_JWT_SECRET", "GATE_API_KEY_PEPPER"):
    if f"{secret}=" not in example:
        problems.append(f"deploy/gate.env.example: {secret} missing")

for p in problems:
    print(p)
print(f"container files: {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
