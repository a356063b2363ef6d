"""Independent generator for the ARP/NDP test vectors in src/packet/vectors.rs.

Each frame is assembled field by field from the RFC 826 / RFC 4861 layouts
(not from ferrolb code), the ICMPv6 checksum is computed over the RFC 4443
pseudo-header here, and the frames are written to v.pcap so that tcpdump can
cross-check them:

    python3 packet_vectors.py && tcpdump -r v.pcap -vv -e -n

tcpdump must print "[icmp6 sum ok]" for every NDP frame. The ARP request is
padded to the 60-byte Ethernet minimum, as it appears when captured on the
receiving host; the frames we send are 42 bytes (the driver pads them).
"""
import struct, socket
def mac(s): return bytes.fromhex(s.replace(':',''))
def v4(s): return socket.inet_pton(socket.AF_INET, s)
def v6(s): return socket.inet_pton(socket.AF_INET6, s)
BC=mac('ff:ff:ff:ff:ff:ff'); A=mac('00:00:5e:00:53:01'); B=mac('00:00:5e:00:53:02'); Z=bytes(6)
def arp(dst, src, op, sha, spa, tha, tpa, pad=0):
    return dst+src+b'\x08\x06'+struct.pack('!HHBBH',1,0x0800,6,4,op)+sha+v4(spa)+tha+v4(tpa)+bytes(pad)
def csum(b):
    if len(b)%2: b+=b'\0'
    s=sum(struct.unpack('!%dH'%(len(b)//2),b))
    while s>>16: s=(s&0xffff)+(s>>16)
    return (~s)&0xffff
def ndp(dst, src, ip_src, ip_dst, icmp_type, word, target, opts):
    body=struct.pack('!BBHI',icmp_type,0,0,word)+v6(target)+opts
    ph=v6(ip_src)+v6(ip_dst)+struct.pack('!I',len(body))+b'\0\0\0\x3a'
    c=csum(ph+body)
    body=body[:2]+struct.pack('!H',c)+body[4:]
    ip=struct.pack('!IHBB',0x60000000,len(body),58,255)+v6(ip_src)+v6(ip_dst)
    return dst+src+b'\x86\xdd'+ip+body
vec={}
vec['ARP_REQUEST']=arp(BC,A,1,A,'192.0.2.1',Z,'198.51.100.10',pad=18)
vec['ARP_REPLY']=arp(A,B,2,B,'198.51.100.10',A,'192.0.2.1')
vec['GRATUITOUS_ARP']=arp(BC,B,1,B,'198.51.100.10',Z,'198.51.100.10')
sn='ff02::1:ff00:a'; snmac=mac('33:33:ff:00:00:0a')
vec['NS']=ndp(snmac,A,'2001:db8::1',sn,135,0,'2001:db8:100::a', b'\x01\x01'+A)
vec['DAD_NS']=ndp(snmac,A,'::',sn,135,0,'2001:db8:100::a', b'\x0e\x01'+bytes.fromhex('5a3c91e07b24'))
vec['SOLICITED_NA']=ndp(A,B,'2001:db8:100::a','2001:db8::1',136,0x60000000,'2001:db8:100::a', b'\x02\x01'+B)
vec['UNSOLICITED_NA']=ndp(mac('33:33:00:00:00:01'),B,'2001:db8:100::a','ff02::1',136,0x20000000,'2001:db8:100::a', b'\x02\x01'+B)
# pcap for tcpdump cross-check
with open('v.pcap','wb') as f:
    f.write(struct.pack('<IHHiIII',0xa1b2c3d4,2,4,0,0,65535,1))
    for i,(k,v) in enumerate(vec.items()):
        f.write(struct.pack('<IIII',i,0,len(v),len(v))+v)
for k,v in vec.items():
    print(k, len(v))
    print(v.hex())
