// Text of the configuration files the set-up commands write: the node configuration
// example (also shipped as /etc/opt/slapos/slapos.cfg.example), the proxy and client
// examples, and the line editor that fills them in. Used by register, configure local and
// configure client. Keys and default values are the original's; the wording is ours.

/** The node configuration example: every key `slapos node register` fills in is present. */
export const NODE_CONFIG_EXAMPLE = `[slapos]
# Identifier of this node on the SlapOS Master (COMP-... on a public master).
# \`slapos node register\` fills it in from the node certificate.
computer_id = COMP-123456789
master_url = https://slap.vifib.com/
key_file = /etc/opt/slapos/ssl/computer.key
cert_file =  /etc/opt/slapos/ssl/computer.crt
certificate_repository_path = /etc/opt/slapos/ssl/partition_pki
software_root = /opt/slapgrid
instance_root = /srv/slapgrid
# The buildout that builds software releases: the packages' launcher runs the system's
# zc.buildout, made to work on Python 3.10 and later.
buildout = /opt/slapos/bin/buildout
# Directories of parts shared between software releases (slapos.recipe.cmmi):
# new parts go into the last one, the others may already hold some.
#shared_part_list =
#  /opt/slapgrid/read_only_shared
#  /opt/slapgrid/shared
# Managers acting for the partitions: cpuset (exclusive CPUs for power_user_list),
# devperm (disks for virtual machines, see [manager:devperm]), portredir (socat port
# redirections), prerm (scripts run before destruction), whitelistfirewall (needs [firewall]).
#manager_list = portredir prerm
#power_user_list = slapuser3

[slapformat]
# Interface that carries the IPv6 addresses of the partitions (lo with re6st).
interface_name = lo
# Set create_tap to true to host virtual machines (KVM) in partitions.
create_tap = false
partition_amount = 10
computer_xml = /opt/slapos/slapos.xml
log_file = /opt/slapos/log/slapos-node-format.log
partition_base_name = slappart
user_base_name = slapuser
tap_base_name = slaptap
# With create_tap, set tap_ipv6 to false to give the taps IPv4 addresses only.
tap_ipv6 = true
# A private IPv4 network that nothing else on this machine uses.
ipv4_local_network = 10.0.0.0/16
# Prefix length of the IPv6 ranges of partitions, relative to the node's range (default 16).
# ipv6_prefixshift = 16

# Disks the devperm manager may give to partitions (real device paths, one a line).
#[manager:devperm]
#allowed-disk-for-vm =
#  /dev/sdb

# Rename this section to [firewall] to let the node manage a firewalld of its own.
[disabled-firewall]
dbus_executable = /opt/slapos/parts/dbus/bin/dbus-daemon --nofork --nopidfile --system --nosyslog
firewall_executable = /opt/slapos/parts/firewalld/sbin/firewalld --nofork --nopid --log-file /opt/slapos/log/firewalld-process.log
firewall_cmd = /opt/slapos/parts/firewalld/bin/firewall-cmd
reload_config_cmd = /opt/slapos/parts/firewalld/bin/firewall-cmd --reload
log_file = /opt/slapos/log/firewalld.log
dbus_log_file = /opt/slapos/log/dbus.log
# Addresses allowed to reach the partitions.
authorized_sources =

[networkcache]
# Caches of already built software (binary cache) and of downloads.
download-binary-cache-url = http://shacache.nxdcdn.com
download-binary-dir-url = http://shadir.nxdcdn.com
download-cache-url = http://shacache.nxdcdn.com
download-dir-url = http://shadir.nxdcdn.com

# To upload to the caches, uncomment and fill in:
#signature-private-key-file = /etc/opt/slapos/shacache/signature.key
#upload-binary-dir-url = https://www.shacache.org/shadir
#upload-binary-cache-url = https://www.shacache.org/shacache
#upload-cache-url = https://www.shacache.org/shacache
#upload-dir-url = https://www.shacache.org/shadir

# TLS material for https caches:
#shacache-ca-file = /etc/opt/slapos/shacache/ca.cert
#shacache-cert-file = /etc/opt/slapos/shacache/shacache.cert
#shacache-key-file = /etc/opt/slapos/shacache/shacache.key
#shadir-ca-file = /etc/opt/slapos/shacache/ca.cert
#shadir-cert-file = /etc/opt/slapos/shacache/shacache.cert
#shadir-key-file = /etc/opt/slapos/shacache/shacache.key

# Certificates of the uploaders whose binaries are trusted.
signature-certificate-list =
  -----BEGIN CERTIFICATE-----
  MIIB8jCCAVugAwIBAgIJAPu2zchZ2BxoMA0GCSqGSIb3DQEBBQUAMBIxEDAOBgNV
  BAMMB3RzeGRldjMwHhcNMTExMDE0MTIxNjIzWhcNMTIxMDEzMTIxNjIzWjASMRAw
  DgYDVQQDDAd0c3hkZXYzMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCrPbh+
  YGmo6mWmhVb1vTqX0BbeU0jCTB8TK3i6ep3tzSw2rkUGSx3niXn9LNTFNcIn3MZN
  XHqbb4AS2Zxyk/2tr3939qqOrS4YRCtXBwTCuFY6r+a7pZsjiTNddPsEhuj4lEnR
  L8Ax5mmzoi9nE+hiPSwqjRwWRU1+182rzXmN4QIDAQABo1AwTjAdBgNVHQ4EFgQU
  /4XXREzqBbBNJvX5gU8tLWxZaeQwHwYDVR0jBBgwFoAU/4XXREzqBbBNJvX5gU8t
  LWxZaeQwDAYDVR0TBAUwAwEB/zANBgkqhkiG9w0BAQUFAAOBgQA07q/rKoE7fAda
  FED57/SR00OvY9wLlFEF2QJ5OLu+O33YUXDDbGpfUSF9R8l0g9dix1JbWK9nQ6Yd
  R/KCo6D0sw0ZgeQv1aUXbl/xJ9k4jlTxmWbPeiiPZEqU1W9wN5lkGuLxV4CEGTKU
  hJA/yXa1wbwIPGvX3tVKdOEWPRXZLg==
  -----END CERTIFICATE-----
  -----BEGIN CERTIFICATE-----
  MIIB7jCCAVegAwIBAgIJAJWA0jQ4o9DGMA0GCSqGSIb3DQEBBQUAMA8xDTALBgNV
  BAMMBHg2MXMwIBcNMTExMTI0MTAyNDQzWhgPMjExMTEwMzExMDI0NDNaMA8xDTAL
  BgNVBAMMBHg2MXMwgZ8wDQYJKoZIhvcNAQEBBQADgY0AMIGJAoGBANdJNiFsRlkH
  vq2kHP2zdxEyzPAWZH3CQ3Myb3F8hERXTIFSUqntPXDKXDb7Y/laqjMXdj+vptKk
  3Q36J+8VnJbSwjGwmEG6tym9qMSGIPPNw1JXY1R29eF3o4aj21o7DHAkhuNc5Tso
  67fUSKgvyVnyH4G6ShQUAtghPaAwS0KvAgMBAAGjUDBOMB0GA1UdDgQWBBSjxFUE
  RfnTvABRLAa34Ytkhz5vPzAfBgNVHSMEGDAWgBSjxFUERfnTvABRLAa34Ytkhz5v
  PzAMBgNVHRMEBTADAQH/MA0GCSqGSIb3DQEBBQUAA4GBAFLDS7zNhlrQYSQO5KIj
  z2RJe3fj4rLPklo3TmP5KLvendG+LErE2cbKPqnhQ2oVoj6u9tWVwo/g03PMrrnL
  KrDm39slYD/1KoE5kB4l/p6KVOdeJ4I6xcgu9rnkqqHzDwI4v7e8/D3WZbpiFUsY
  vaZhjNYKWQf79l6zXfOvphzJ
  -----END CERTIFICATE-----
  -----BEGIN CERTIFICATE-----
  MIIB9jCCAV+gAwIBAgIJAO4V/jiMoICoMA0GCSqGSIb3DQEBBQUAMBMxETAPBgNV
  BAMMCENPTVAtMjMyMCAXDTEyMDIxNjExMTAyM1oYDzIxMTIwMTIzMTExMDIzWjAT
  MREwDwYDVQQDDAhDT01QLTIzMjCBnzANBgkqhkiG9w0BAQEFAAOBjQAwgYkCgYEA
  wi/3Z8W9pUiegUXIk/AiFDQ0UJ4JFAwjqr+HSRUirlUsHHT+8DzH/hfcTDX1I5BB
  D1ADk+ydXjMm3OZrQcXjn29OUfM5C+g+oqeMnYQImN0DDQIOcUyr7AJc4xhvuXQ1
  P2pJ5NOd3tbd0kexETa1LVhR6EgBC25LyRBRae76qosCAwEAAaNQME4wHQYDVR0O
  BBYEFMDmW9aFy1sKTfCpcRkYnP6zUd1cMB8GA1UdIwQYMBaAFMDmW9aFy1sKTfCp
  cRkYnP6zUd1cMAwGA1UdEwQFMAMBAf8wDQYJKoZIhvcNAQEFBQADgYEAskbFizHr
  b6d3iIyN+wffxz/V9epbKIZVEGJd/6LrTdLiUfJPec7FaxVCWNyKBlCpINBM7cEV
  Gn9t8mdVQflNqOlAMkOlUv1ZugCt9rXYQOV7rrEYJBWirn43BOMn9Flp2nibblby
  If1a2ZoqHRxoNo2yTmm7TSYRORWVS+vvfjY=
  -----END CERTIFICATE-----
  -----BEGIN CERTIFICATE-----
  MIIB9jCCAV+gAwIBAgIJAKRvzcy7OH0UMA0GCSqGSIb3DQEBBQUAMBMxETAPBgNV
  BAMMCENPTVAtNzcyMCAXDTEyMDgxMDE1NDI1MVoYDzIxMTIwNzE3MTU0MjUxWjAT
  MREwDwYDVQQDDAhDT01QLTc3MjCBnzANBgkqhkiG9w0BAQEFAAOBjQAwgYkCgYEA
  o7aipd6MbnuGDeR1UJUjuMLQUariAyQ2l2ZDS6TfOwjHiPw/mhzkielgk73kqN7A
  sUREx41eTcYCXzTq3WP3xCLE4LxLg1eIhd4nwNHj8H18xR9aP0AGjo4UFl5BOMa1
  mwoyBt3VtfGtUmb8whpeJgHhqrPPxLoON+i6fIbXDaUCAwEAAaNQME4wHQYDVR0O
  BBYEFEfjy3OopT2lOksKmKBNHTJE2hFlMB8GA1UdIwQYMBaAFEfjy3OopT2lOksK
  mKBNHTJE2hFlMAwGA1UdEwQFMAMBAf8wDQYJKoZIhvcNAQEFBQADgYEAaNRx6YN2
  M/p3R8/xS6zvH1EqJ3FFD7XeAQ52WuQnKSREzuw0dsw12ClxjcHiQEFioyTiTtjs
  5pW18Ry5Ie7iFK4cQMerZwWPxBodEbAteYlRsI6kePV7Gf735Y1RpuN8qZ2sYL6e
  x2IMeSwJ82BpdEI5niXxB+iT0HxhmR+XaMI=
  -----END CERTIFICATE-----
  -----BEGIN CERTIFICATE-----
  MIICAjCCAWugAwIBAgIJAP/k6bltwfZCMA0GCSqGSIb3DQEBCwUAMBkxFzAVBgNV
  BAMMDmxvY2FsX2NvbXB1dGVyMCAXDTE3MTEwOTA2NTU1M1oYDzIxMTcxMDE2MDY1
  NTUzWjAZMRcwFQYDVQQDDA5sb2NhbF9jb21wdXRlcjCBnzANBgkqhkiG9w0BAQEF
  AAOBjQAwgYkCgYEAuWN8O1PQ23mulMu45fDxTHeoI33MDWDLHP9gthsMbTplftDf
  k8BAKCp/ugbAkCD5LTx/6RH1RdyM/LApUI/n+fxFnnVZn8Fyuzwu/TlvGdNT5yrj
  RhBkcxeCpWWz9Ysezj9jVnK+TCSjJeb/N55aMgXAVjrIeJkR4SkPDdMBtcMCAwEA
  AaNQME4wHQYDVR0OBBYEFJ+1cOY78rvaNAzqshFjVOWfqoMzMB8GA1UdIwQYMBaA
  FJ+1cOY78rvaNAzqshFjVOWfqoMzMAwGA1UdEwQFMAMBAf8wDQYJKoZIhvcNAQEL
  BQADgYEAJDLdo6fXZxEaHYJuZ6XuYPNAYAcSOiSbJoMSSz7qQJ+4FWPGCBnhiZbU
  SyslQFs59yqNxb046uKi7D4JeUd0zdBO3TtceGRK3iyEFNx8GF+em/6pNnC3A/XH
  +L1VRZsQdvh7NHsl/dVvWmmlmOANQ/+JkLbe98c/rCmBDH48Ldc=
  -----END CERTIFICATE-----
# Software release URLs never taken from the binary cache (prefix match).
download-from-binary-cache-url-blacklist =
${blacklistLines()}
# Software release URLs never uploaded to the binary cache (prefix match).
upload-to-binary-cache-url-blacklist =
${blacklistLines()}

# Software release URLs always taken from the binary cache (prefix match).
#download-from-binary-cache-force-url-list =
#  https://lab.nexedi.com/nexedi/slapos/-/raw/1.0.
#  https://lab.nxdcdn.com/nexedi/slapos/-/raw/1.0.
#  https://lab.nexedi.cn/nexedi/slapos/-/raw/1.0.
#  https://lab.nexedi.com/nexedi/slapos/raw/1.0.
#  https://lab.nxdcdn.com/nexedi/slapos/raw/1.0.
#  https://lab.nexedi.cn/nexedi/slapos/raw/1.0.

[collect]
enable = True
time_cycle = 86400
pid_folder = /srv/slapgrid/var/run
use_quota = False
`

/** The proxy configuration example (slapos-proxy.cfg of `configure local`). */
export const PROXY_CONFIG_EXAMPLE = `# Local SlapOS Master (slapos proxy start): one SQLite file, no authentication.
[slapos]
instance_root = /srv/slapgrid
software_root = /opt/slapgrid
computer_id = local_computer

[slapproxy]
host = 127.0.0.1
port = 5000
database_uri = /opt/slapos/slapproxy.db

# Shacache/shadir proxy of /shacache/cache and /shacache/dir: archives and directory entries
# kept in two local directories, what is missing fetched from the upstream caches and kept.
# \`slapos configure local --enable-shacache-proxy\` sets these.
#shacache_content_directory = /opt/shacache/data
#shacache_metadata_directory = /opt/shacache/dir
#shacache_signing_key_path = /opt/shacache/signing-key.pem
#shacache_upstream_cache_url = http://shacache.nxdcdn.com
#shacache_upstream_dir_url = http://shadir.nxdcdn.com

# Software products known by name, as a real master would list them.
software_product_list =
  erp5 https://lab.node.vifib.com/nexedi/slapos/raw/1.0.48/software/erp5/software.cfg
  kvm https://lab.node.vifib.com/nexedi/slapos/raw/1.0.48/software/kvm/software.cfg
  slaprunner https://lab.node.vifib.com/nexedi/slapos/raw/1.0.48/software/slaprunner/software.cfg
  frontend https://lab.node.vifib.com/nexedi/slapos/raw/1.0.48/software/apache-frontend/software.cfg
  monitor https://lab.node.vifib.com/nexedi/slapos/raw/1.0.48/software/monitor/software.cfg
  cloudooo https://lab.node.vifib.com/nexedi/slapos/raw/1.0.48/software/cloudooo/software.cfg
  wendelin https://lab.node.vifib.com/nexedi/slapos/raw/1.0.48/software/wendelin/software.cfg

# Forwarding requests to other masters: one [multimaster/<master url>] section per master,
# with key and cert (for https) and the software_release_list whose requests go there.
# A request can also name its master with master_url in its filter.
#[multimaster/https://slap.vifib.com]
#key = /path/to/your/account/key
#cert = /path/to/your/account/certificate
#software_release_list =
#  https://example.com/software/frontend/software.cfg
`

/** The client configuration example (slapos-client.cfg of `configure client`). */
export const CLIENT_CONFIG_EXAMPLE = `[slapos]
master_url = https://slap.vifib.com/

[slapconsole]
# Certificate and key of YOUR ACCOUNT on the SlapOS Master (not the node's):
# requests are made in your name.
cert_file = certificate file location coming from your slapos master account
key_file = key file location coming from your slapos master account
`

/**
 * Sets keys of a section in INI text, keeping every other line (comments included):
 * an existing `key = ...` line of that section is replaced by `key = value` (continuation
 * lines of the old value are dropped); a missing key is appended at the end of the
 * section's key lines; `null` removes the key. A missing section is appended.
 * Like the original's regular-expression edit, but scoped to the section, so a key of the
 * same name elsewhere (log_file of [disabled-firewall]) keeps its value.
 */
export function setKeys(text: string, section: string, values: Record<string, string | number | null>): string {
  const lines = text.split('\n')
  const todo = new Map(Object.entries(values))
  let start = lines.findIndex((l) => l.trim() === `[${section}]`)
  if (start < 0) {
    const add = [...todo].filter(([, v]) => v !== null).map(([k, v]) => `${k} = ${v}`)
    if (!add.length) return text
    const body = text.endsWith('\n') ? text : text + '\n'
    return `${body}\n[${section}]\n${add.join('\n')}\n`
  }
  let end = lines.findIndex((l, i) => i > start && /^\[/.test(l))
  if (end < 0) end = lines.length
  const out = lines.slice(0, start + 1)
  let lastKeyLine = start + 1 // where appended keys go: after the last key line or continuation
  for (let i = start + 1; i < end; i++) {
    const line = lines[i] ?? ''
    const m = /^([^\s#;=][^=]*?)\s*[=:]/.exec(line)
    const key = m?.[1]?.trim().toLowerCase()
    if (key !== undefined && todo.has(key)) {
      const v = todo.get(key)
      todo.delete(key)
      // skip the old value's continuation lines
      while (i + 1 < end && /^\s+\S/.test(lines[i + 1] ?? '')) i++
      if (v !== null) {
        out.push(`${key} = ${v}`)
        lastKeyLine = out.length
      }
      continue
    }
    out.push(line)
    if (key !== undefined || /^\s+[^\s#;]/.test(line)) lastKeyLine = out.length
  }
  const add = [...todo].filter(([, v]) => v !== null).map(([k, v]) => `${k} = ${v}`)
  out.splice(lastKeyLine, 0, ...add)
  return [...out, ...lines.slice(end)].join('\n')
}

// --- internal ---

function blacklistLines(): string {
  const hosts = ['lab.nexedi.cn', 'lab.nexedi.com', 'lab.nxdcdn.com']
  const urls: string[] = []
  for (const raw of ['/-/raw/', '/raw/']) {
    for (const host of hosts) for (const ref of ['master', '1.0/', 'erp5']) urls.push(`https://${host}/nexedi/slapos${raw}${ref}`)
  }
  urls.push('http://git.erp5.org/gitweb/slapos.git/blob_plain/HEAD', 'http://git.erp5.org/gitweb/slapos.git/blob_plain/refs/heads', '/')
  return urls.map((u) => `  ${u}`).join('\n')
}
