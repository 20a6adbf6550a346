; The example deployment's zone. File name = zone name (gdnsd convention).
; www, fast, eu, multi, canary and backup are answered by policies/example.yaml.
$ORIGIN example.com.
$TTL 3600
@       IN  SOA ns1.example.com. hostmaster.example.com. (
                2026112201 ; serial
                7200       ; refresh
                3600       ; retry
                1209600    ; expire
                300 )      ; minimum: negative answers are cached this long
        IN  NS    ns1
        IN  NS    ns2
        IN  MX    10 mail
        IN  TXT   "v=spf1 mx -all"
        IN  CAA   0 issue "letsencrypt.org"
        IN  A     192.0.2.10
        IN  AAAA  2001:db8::10
ns1     IN  A     192.0.2.1
ns1     IN  AAAA  2001:db8::1
ns2     IN  A     192.0.2.2
mail    IN  A     192.0.2.25
api     IN  CNAME www
_https._tcp IN SRV 10 5 443 www
_sip._udp   IN NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp.example.com.
*.apps  IN  A     192.0.2.100
docs    IN  HTTPS 1 . alpn=h2,h3 port=443
txt     IN  TXT   "first string" "second string"
legacy  IN  DNAME example.net.
; delegated to the operator's lab, with glue
lab     IN  NS    ns.lab
lab     IN  DS    12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
ns.lab  IN  A     192.0.2.53
ssh     IN  SSHFP 4 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
_443._tcp.www IN TLSA 3 1 1 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
10      IN  PTR   www
