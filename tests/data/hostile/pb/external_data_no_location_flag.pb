Bxj
location../../../etc/passwd