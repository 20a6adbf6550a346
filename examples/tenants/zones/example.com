; tenants.example.com's tenants are answered by policies/tenants.yaml.
$ORIGIN example.com.
$TTL 3600
@       IN  SOA ns1.example.com. hostmaster.example.com. 2026120401 7200 3600 1209600 300
        IN  NS    ns1
ns1     IN  A     192.0.2.1
