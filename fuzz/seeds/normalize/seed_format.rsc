# 2024/01/15 10:30:00 by RouterOS 7.14

/a
