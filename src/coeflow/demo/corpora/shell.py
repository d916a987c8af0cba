"""`shell` expert text: generated command lines and short bash scripts, each command with
a comment saying what it does, over the file names, paths, hosts and services in
`data/corpora/shell.json`."""

from __future__ import annotations

import random

from coeflow.demo.datafiles import read_json

_WORDS = read_json("corpora/shell.json")
DIRS: list[str] = _WORDS["dirs"]
FILES: list[str] = _WORDS["files"]
EXTS: list[str] = _WORDS["exts"]
HOSTS: list[str] = _WORDS["hosts"]
SERVICES: list[str] = _WORDS["services"]
WORDS: list[str] = _WORDS["words"]  # what grep and sed look for


def shell_corpus(seed: int, n_chars: int, split: str = "train") -> list[str]:
    rng = random.Random(f"shell-{seed}-{split}")
    docs, total = [], 0
    while total < n_chars:
        if rng.random() < 0.3:
            doc = _script(rng)
        else:
            doc = "\n\n".join(_command(rng) for _ in range(rng.randint(4, 9)))
        docs.append(doc)
        total += len(doc)
    return docs


def _command(rng: random.Random) -> str:
    d, f, e = rng.choice(DIRS), rng.choice(FILES), rng.choice(EXTS)
    host, svc, w = rng.choice(HOSTS), rng.choice(SERVICES), rng.choice(WORDS)
    n = rng.randint(1, 100)
    return rng.choice([
        f"# list files in {d}, newest first\nls -lt {d}",
        f"# show hidden files too\nls -la {d}",
        f"# find .{e} files bigger than {n}M\nfind {d} -name '*.{e}' -size +{n}M",
        f"# delete .{e} files older than {n} days\nfind {d} -name '*.{e}' -mtime +{n} -delete",
        f"# search for {w} in every file, with line numbers\ngrep -rn '{w}' {d}",
        f"# count lines of {f}\nwc -l {d}/{f}",
        f"# last {n} lines of {f}, and follow\ntail -n {n} -f {d}/{f}",
        f"# disk usage per folder, sorted\ndu -sh {d}/* | sort -h",
        "# free disk space\ndf -h",
        f"# make it executable\nchmod +x {d}/run.sh",
        f"# give the owner read and write, others read\nchmod 644 {d}/{f}",
        f"# change owner recursively\nsudo chown -R www-data:www-data {d}",
        f"# archive a folder\ntar -czvf backup.tar.gz {d}",
        f"# extract an archive\ntar -xzf {f} -C {d}",
        f"# copy to a remote host\nscp {d}/{f} {host}:/tmp/",
        f"# mirror a folder\nrsync -avz --delete {d}/ {host}:{d}/",
        f"# log in with a key\nssh -i ~/.ssh/id_ed25519 {host}",
        f"# processes using the most memory\nps aux --sort=-%mem | head -n {n % 15 + 5}",
        f"# kill whatever listens on port {8000 + n}\nkill $(lsof -t -i :{8000 + n})",
        f"# restart {svc}\nsudo systemctl restart {svc}",
        f"# logs of {svc} since an hour ago\njournalctl -u {svc} --since '1 hour ago'",
        f"# replace {w} with {w.lower()}_new in place\nsed -i 's/{w}/{w.lower()}_new/g' {d}/{f}",
        f"# print the second column\nawk '{{print $2}}' {d}/{f}",
        f"# unique values of the first field, counted\ncut -d, -f1 {d}/{f} | sort | uniq -c | sort -rn",
        f"# download a file\ncurl -L -o {f} https://example.com/{f}",
        "# add a folder to PATH\nexport PATH=\"$HOME/.local/bin:$PATH\"",
        "# run in the background, immune to hangups\nnohup ./run.sh > out.log 2>&1 &",
        f"# rename every .{e} to .bak\nfor f in *.{e}; do mv \"$f\" \"${{f%.{e}}}.bak\"; done",
        f"# create nested folders\nmkdir -p {d}/a/b/c",
        f"# link a binary into PATH\nsudo ln -s {d}/bin/tool /usr/local/bin/tool",
        f"# every night at {n % 24}:00\ncrontab -l; echo '0 {n % 24} * * * {d}/backup.sh' | crontab -",
        f"# which process uses port {8000 + n}\nsudo ss -ltnp | grep :{8000 + n}",
        f"# compare two files\ndiff -u {d}/{f} {d}/{f}.orig",
        "# kernel and system\nuname -a",
        f"# install a package\nsudo apt-get install -y {svc}",
        f"# empty directories\nfind {d} -type d -empty -delete",
    ])


def _script(rng: random.Random) -> str:
    d, e, host = rng.choice(DIRS), rng.choice(EXTS), rng.choice(HOSTS)
    n = rng.randint(2, 30)
    return rng.choice([
        f"#!/usr/bin/env bash\nset -euo pipefail\n\n# back up {d} and keep {n} copies\nstamp=$(date +%Y%m%d)\n"
        f"tar -czf \"/backups/data-$stamp.tar.gz\" {d}\nls -1t /backups/*.tar.gz | tail -n +{n + 1} | xargs -r rm --\n",
        "#!/bin/bash\n# ping each host listed in hosts.txt\nwhile read -r host; do\n    if ping -c 1 -W 2 \"$host\" > /dev/null; then\n"
        "        echo \"$host up\"\n    else\n        echo \"$host down\"\n    fi\ndone < hosts.txt\n",
        f"#!/usr/bin/env bash\n# count lines in every .{e} file\nfor f in $(find {d} -name '*.{e}'); do\n    echo \"$(wc -l < \"$f\") $f\"\ndone | sort -n\n",
        f"#!/bin/sh\n# wait until {host} answers on port 22\nuntil nc -z {host} 22; do\n    sleep {n % 5 + 1}\ndone\necho ready\n",
        f"#!/usr/bin/env bash\n# usage: ./clean.sh DIR\nif [ $# -ne 1 ]; then\n    echo \"usage: $0 DIR\" >&2\n    exit 1\nfi\n"
        f"find \"$1\" -name '*.{e}' -mtime +{n} -print -delete\n",
    ])
