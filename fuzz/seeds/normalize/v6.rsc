# jan/15/2024 10:30:00 by RouterOS 6.49.10

/ip address
add address=1.1.1.1  


