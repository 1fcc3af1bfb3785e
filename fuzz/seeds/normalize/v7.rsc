# 2024-01-15 10:30:00 by RouterOS 7.14
# software id = ABCD-EFGH
#
/interface bridge
add name=b1
# Interface not active
#error exporting /ip firewall calea
