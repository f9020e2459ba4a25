from trainguard.schemas.generate import JSON_DIR, render_all


def test_committed_json_schemas_match_the_structs():
    rendered = render_all()
    committed = {p.name: p.read_text() for p in JSON_DIR.glob("*.json")}
    assert set(committed) == set(rendered), "run `python -m trainguard.schemas.generate` and commit"
    for name, text in rendered.items():
        assert committed[name] == text, (
            f"{name} drifted: run `python -m trainguard.schemas.generate`")
