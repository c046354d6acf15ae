#!/usr/bin/env python3
"""Extracts the ```swift blocks of notebooks-md/*.md into DDPOApp/Notebooks/*.swift.

Each notebook declares `<!-- notebook: name=NAME returns=VAR expect-below=X -->`; its blocks are
concatenated into `func NAME() -> Double { ...; return VAR }`. NotebookTests re-extracts the
markdown in Swift and fails when the generated file is stale, then runs the function.
Run from the repository root: python3 scripts/extract-notebooks.py
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADER = re.compile(r"<!-- notebook: name=(\w+) returns=(\w+) expect-below=([0-9.eE+-]+) -->")


def generate(markdown: str, source_name: str) -> str:
    header = HEADER.search(markdown)
    if not header:
        raise SystemExit(f"{source_name}: missing '<!-- notebook: name=... returns=... expect-below=... -->'")
    name, result, _ = header.groups()
    blocks = re.findall(r"```swift\n(.*?)```", markdown, flags=re.S)
    body = "\n".join(blocks)
    indented = "\n".join(("    " + line) if line.strip() else "" for line in body.splitlines())
    return (
        f"// Generated from notebooks-md/{source_name} by scripts/extract-notebooks.py. Do not edit.\n"
        "import Foundation\n"
        "import RLAlgorithms\n\n"
        f"func {name}(output: @escaping (String) -> Void = {{ Swift.print($0) }}) throws -> Double {{\n"
        "    func print(_ items: Any...) { output(items.map { \"\\($0)\" }.joined(separator: \" \")) }\n"
        f"{indented}\n"
        f"    return {result}\n"
        "}\n"
    )


def main() -> None:
    out_dir = ROOT / "DDPOApp" / "Notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "notebooks-md").glob("*.md")):
        text = path.read_text()
        if "<!-- notebook:" not in text:
            continue
        header = HEADER.search(text)
        target = out_dir / (header.group(1).capitalize() + ".swift") if header else None
        code = generate(text, path.name)
        target.write_text(code)
        print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
