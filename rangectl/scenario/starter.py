"""The commented starter scenario written by ``rangectl new``."""

STARTER = """\
# A rangectl scenario, format 1. Every field: docs/scenario-format.md
# Check it with:  rangectl validate {file}
# Editor completion: rangectl schema > rangectl.schema.json (see docs/scenario-format.md)
rangectl: 1
name: {name}
title: {title}
description: >
  One paragraph for trainers: what happens in this drill and what it trains.
briefing:
  en: You are the on-site response team. Watch the portal and report anything odd.
  vi: Bạn là đội ứng cứu tại chỗ. Theo dõi cổng thông tin và báo cáo mọi bất thường.
level: 2              # information-system security level, 1-5
duration: 45m
tags: [example]

networks:             # name -> IPv4 subnet; teams 2.. get their own copies
  wan: {{subnet: 198.51.100.0/24}}
  dmz: {{subnet: 10.10.1.0/24}}

nodes:
  gw:                 # the router between the simulated internet and the DMZ
    image: router
    role: infra
    forward: true
    interfaces: {{wan: 198.51.100.1, dmz: 10.10.1.1}}
  portal:
    image: web
    role: target
    gateway: 10.10.1.1
    interfaces: {{dmz: 10.10.1.10}}
    services:
      - {{name: http, port: 80, proto: tcp}}
  soc:                # the responders' workstation
    image: workstation
    role: blue
    gateway: 10.10.1.1
    interfaces: {{dmz: 10.10.1.50}}
  scanner:            # the attacker
    image: attacker
    role: red
    gateway: 198.51.100.1
    interfaces: {{wan: 198.51.100.66}}

injects:              # the timeline (MSEL)
  - id: kickoff
    at: 0s
    message: {{en: The drill has started., vi: Diễn tập bắt đầu.}}
  - id: recon
    at: 2m
    traffic: {{kind: portscan, from: scanner, target: portal, ports: "20-25,80,443"}}

objectives:           # what teams are scored on
  - id: scanner-ip
    category: detection
    after: recon
    points: 100
    prompt: {{en: Which address scanned the portal?, vi: Địa chỉ nào đã quét cổng thông tin?}}
    answer: {{ip_of: scanner}}
    hints:
      - {{text: Look at the web server's access log., cost: 20}}
  - id: block-scanner
    category: containment
    after: recon
    points: 200
    prompt: Block the scanner at the router.
    check: {{blocked: {{from: scanner, to: portal, port: 80}}}}

availability:         # points per round while the service stays up
  - {{node: portal, service: http, points: 5, every: 30s}}

scoring: {{policy: standard}}
"""


def starter(name: str, file: str) -> str:
    title = name.replace("-", " ").capitalize()
    return STARTER.format(name=name, title=title, file=file)
