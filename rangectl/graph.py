"""Topology drawings: plain text, Mermaid and Graphviz dot."""

from __future__ import annotations

import networkx as nx

from rangectl.scenario.model import Scenario

ROLE_STYLE = {"infra": "#9e9e9e", "target": "#e6a23c", "blue": "#409eff", "red": "#f56c6c"}


def topology(sc: Scenario) -> nx.Graph:
    g = nx.Graph()
    for name, net in sc.networks.items():
        g.add_node(f"net:{name}", kind="network", label=f"{name}\n{net.subnet}")
    for name, node in sc.nodes.items():
        g.add_node(f"node:{name}", kind="node", role=node.role, image=node.image, label=name)
        for net, ip in node.interfaces.items():
            if net in sc.networks:
                g.add_edge(f"node:{name}", f"net:{net}", ip=str(ip))
    return g


def to_text(sc: Scenario) -> str:
    lines = [f"{sc.name}"]
    nets = list(sc.networks.items())
    for i, (name, net) in enumerate(nets):
        last_net = i == len(nets) - 1
        lines.append(f"{'└──' if last_net else '├──'} network {name} {net.subnet}")
        members = [(n, node) for n, node in sc.nodes.items() if name in node.interfaces]
        for j, (n, node) in enumerate(members):
            branch = "    " if last_net else "│   "
            tip = "└──" if j == len(members) - 1 else "├──"
            extra = " (forwards)" if node.forward else ""
            lines.append(f"{branch}{tip} {n} [{node.role}, {node.image}] {node.interfaces[name]}{extra}")
    return "\n".join(lines)


def _mid(name: str) -> str:
    return name.replace("-", "_")


def to_mermaid(sc: Scenario) -> str:
    out = ["graph LR"]
    for name, net in sc.networks.items():
        out.append(f'  net_{_mid(name)}(["{name}<br/>{net.subnet}"])')
    for name, node in sc.nodes.items():
        out.append(f'  node_{_mid(name)}["{name}<br/>{node.role} · {node.image}"]:::{node.role}')
        for net, ip in node.interfaces.items():
            out.append(f'  node_{_mid(name)} ---|"{ip}"| net_{_mid(net)}')
    for role, colour in ROLE_STYLE.items():
        out.append(f"  classDef {role} fill:{colour},color:#fff")
    return "\n".join(out)


def to_dot(sc: Scenario) -> str:
    out = [f'graph "{sc.name}" {{', "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for name, net in sc.networks.items():
        out.append(f'  "net:{name}" [label="{name}\\n{net.subnet}", shape=ellipse, style=dashed];')
    for name, node in sc.nodes.items():
        colour = ROLE_STYLE.get(node.role, "#cccccc")
        out.append(
            f'  "node:{name}" [label="{name}\\n{node.role} / {node.image}", shape=box, style=filled, fillcolor="{colour}"];'
        )
        for net, ip in node.interfaces.items():
            out.append(f'  "node:{name}" -- "net:{net}" [label="{ip}"];')
    out.append("}")
    return "\n".join(out)


def render(sc: Scenario, fmt: str) -> str:
    return {"text": to_text, "mermaid": to_mermaid, "dot": to_dot}[fmt](sc)
