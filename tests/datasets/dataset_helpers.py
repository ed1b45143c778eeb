"""Small deterministic texts and records for the dataset tests."""

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def sentence(i: int, n: int = 8) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n)) + f" {i}"


def records(n_clients: int = 10, per_client: int = 3) -> list[dict]:
    out = []
    for c in range(n_clients):
        for j in range(per_client):
            out.append({"body": sentence(c * 100 + j), "who": f"user{c}", "tags": [f"cat{c % 4}", "other"]})
    return out
