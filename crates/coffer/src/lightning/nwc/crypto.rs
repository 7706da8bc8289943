//! The two payload encryptions NIP-47 uses between a client and its wallet
//! service, written from the NIPs:
//!
//! - NIP-44 v2: ECDH (the shared point's x, unhashed), HKDF-SHA256 extract
//!   with the salt `nip44-v2` into a conversation key; per message, a random
//!   32-byte nonce, HKDF expand into a ChaCha20 key and nonce and an HMAC
//!   key; the plaintext padded to hide its length; the MAC over nonce and
//!   ciphertext, checked in constant time before anything is decrypted.
//! - NIP-04 (deprecated, still spoken by older wallets): AES-256-CBC with the
//!   shared x as key, PKCS#7, `base64(ciphertext)?iv=base64(iv)`. It has no
//!   MAC: NWC events are signed, and coffer checks the signature and author
//!   before it decrypts anything.
//!
//! Only the primitives come from crates (`chacha20`, `hkdf`, `hmac`, `aes`,
//! `cbc`, and secp256k1 through `bitcoin`); the constructions are here, and
//! the unit tests check them against the official NIP-44 vectors.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bitcoin::secp256k1::{Parity, SecretKey, XOnlyPublicKey, ecdh};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The longest plaintext coffer encrypts or accepts: NWC messages are
/// small, and longer ones would need NIP-44's 6-byte length prefix, which
/// no NWC message needs.
pub const PLAINTEXT_LEN_MAX_BYTES: usize = 65_535;
/// The shortest NIP-44 payload (base64 of 99 bytes) and the longest one
/// (base64 of 65 + 2 + 65 536 bytes).
const NIP44_PAYLOAD_LEN_MIN_CHARS: usize = 132;
const NIP44_PAYLOAD_LEN_MAX_CHARS: usize = 87_472;
const NIP44_VERSION: u8 = 2;
const NIP44_SALT: &[u8] = b"nip44-v2";
/// NIP-04's largest content: the plaintext limit, padded, in base64, plus
/// `?iv=` and the IV.
const NIP04_CONTENT_LEN_MAX_CHARS: usize = 87_432 + 4 + 24;

/// The length of `n` bytes in padded base64.
const fn base64_len_chars(n: usize) -> usize {
    n.div_ceil(3) * 4
}
// The bounds above are the ones their comments derive: a plaintext length
// fits NIP-44's 2-byte prefix, a NIP-44 payload is version, nonce and MAC
// (65 bytes) around the prefixed plaintext padded to at most 65,536 bytes,
// and a NIP-04 content holds the longest plaintext, padded to AES blocks.
const _: () = assert!(PLAINTEXT_LEN_MAX_BYTES == u16::MAX as usize);
const _: () = assert!(NIP44_PAYLOAD_LEN_MIN_CHARS == base64_len_chars(99));
const _: () = assert!(NIP44_PAYLOAD_LEN_MAX_CHARS == base64_len_chars(65 + 2 + 65_536));
const _: () =
    assert!(NIP04_CONTENT_LEN_MAX_CHARS >= base64_len_chars((PLAINTEXT_LEN_MAX_BYTES / 16 + 1) * 16) + 4 + 24);
// A relay message holds the largest content of either encryption.
const _: () = assert!(NIP44_PAYLOAD_LEN_MAX_CHARS < super::relay::RELAY_MESSAGE_LEN_MAX_BYTES);
const _: () = assert!(NIP04_CONTENT_LEN_MAX_CHARS < super::relay::RELAY_MESSAGE_LEN_MAX_BYTES);

/// Which encryption a request uses (NIP-47's `encryption` tag values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    Nip44V2,
    Nip04,
}

impl Encryption {
    pub fn tag(self) -> &'static str {
        match self {
            Encryption::Nip44V2 => "nip44_v2",
            Encryption::Nip04 => "nip04",
        }
    }
}

/// Why a payload could not be encrypted or read. Says nothing of the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoError(pub &'static str);

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The keys one side shares with the other: derived once per pair. Never
/// printed (no `Debug`).
pub struct Conversation {
    shared_x: [u8; 32],
    conversation_key: [u8; 32],
}

impl Conversation {
    pub fn new(ours: &SecretKey, theirs: &XOnlyPublicKey) -> Conversation {
        let point = ecdh::shared_secret_point(&theirs.public_key(Parity::Even), ours);
        let mut shared_x = [0u8; 32];
        shared_x.copy_from_slice(&point[..32]);
        let (prk, _) = hkdf::Hkdf::<Sha256>::extract(Some(NIP44_SALT), &shared_x);
        Conversation { shared_x, conversation_key: prk.into() }
    }

    /// The NIP-44 conversation key (for the test vectors).
    pub fn nip44_key(&self) -> [u8; 32] {
        self.conversation_key
    }

    pub fn encrypt(&self, encryption: Encryption, plaintext: &str) -> Result<String, CryptoError> {
        match encryption {
            Encryption::Nip44V2 => {
                nip44_encrypt(&self.conversation_key, plaintext, crate::secrets::random_bytes::<32>())
            }
            Encryption::Nip04 => nip04_encrypt(&self.shared_x, plaintext, crate::secrets::random_bytes::<16>()),
        }
    }

    pub fn decrypt(&self, encryption: Encryption, payload: &str) -> Result<String, CryptoError> {
        match encryption {
            Encryption::Nip44V2 => nip44_decrypt(&self.conversation_key, payload),
            Encryption::Nip04 => nip04_decrypt(&self.shared_x, payload),
        }
    }
}

/// NIP-44's padded length: 32 bytes at least, then chunks that grow with
/// the length (a power of two up to 256, an eighth of the next power above).
pub fn padded_len(unpadded_len: usize) -> usize {
    if unpadded_len <= 32 {
        return 32;
    }
    // NIP-44 writes it `1 << (floor(log2(len - 1)) + 1)`: the smallest power
    // of two above len - 1, which is len's next power of two.
    let next_power = unpadded_len.next_power_of_two();
    let chunk = if next_power <= 256 { 32 } else { next_power / 8 };
    chunk * ((unpadded_len - 1) / chunk + 1)
}

struct MessageKeys {
    chacha_key: [u8; 32],
    chacha_nonce: [u8; 12],
    hmac_key: [u8; 32],
}

fn message_keys(conversation_key: &[u8; 32], nonce: &[u8; 32]) -> Result<MessageKeys, CryptoError> {
    let hk = hkdf::Hkdf::<Sha256>::from_prk(conversation_key).map_err(|_| CryptoError("bad conversation key"))?;
    let mut okm = [0u8; 76];
    hk.expand(nonce, &mut okm).map_err(|_| CryptoError("HKDF expand failed"))?;
    let mut keys = MessageKeys { chacha_key: [0; 32], chacha_nonce: [0; 12], hmac_key: [0; 32] };
    keys.chacha_key.copy_from_slice(&okm[..32]);
    keys.chacha_nonce.copy_from_slice(&okm[32..44]);
    keys.hmac_key.copy_from_slice(&okm[44..]);
    Ok(keys)
}

fn chacha20(keys: &MessageKeys, data: &mut [u8]) {
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    let mut cipher = chacha20::ChaCha20::new(&keys.chacha_key.into(), &keys.chacha_nonce.into());
    cipher.apply_keystream(data);
}

fn mac(keys: &MessageKeys, nonce: &[u8; 32], ciphertext: &[u8]) -> Result<[u8; 32], CryptoError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&keys.hmac_key).map_err(|_| CryptoError("bad HMAC key"))?;
    mac.update(nonce);
    mac.update(ciphertext);
    Ok(mac.finalize().into_bytes().into())
}

/// NIP-44 v2 encryption with the given nonce (random in use, fixed in the
/// test vectors).
pub fn nip44_encrypt(conversation_key: &[u8; 32], plaintext: &str, nonce: [u8; 32]) -> Result<String, CryptoError> {
    let text = plaintext.as_bytes();
    if text.is_empty() || text.len() > PLAINTEXT_LEN_MAX_BYTES {
        return Err(CryptoError("plaintext length out of range"));
    }
    let keys = message_keys(conversation_key, &nonce)?;
    let mut padded = Vec::with_capacity(2 + padded_len(text.len()));
    padded.extend_from_slice(&(text.len() as u16).to_be_bytes());
    padded.extend_from_slice(text);
    padded.resize(2 + padded_len(text.len()), 0);
    chacha20(&keys, &mut padded);
    let tag = mac(&keys, &nonce, &padded)?;
    let mut payload = Vec::with_capacity(1 + 32 + padded.len() + 32);
    payload.push(NIP44_VERSION);
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(&padded);
    payload.extend_from_slice(&tag);
    Ok(STANDARD.encode(payload))
}

pub fn nip44_decrypt(conversation_key: &[u8; 32], payload: &str) -> Result<String, CryptoError> {
    if payload.starts_with('#') {
        return Err(CryptoError("unknown NIP-44 encoding version"));
    }
    if !(NIP44_PAYLOAD_LEN_MIN_CHARS..=NIP44_PAYLOAD_LEN_MAX_CHARS).contains(&payload.len()) {
        return Err(CryptoError("NIP-44 payload length out of range"));
    }
    let data = STANDARD.decode(payload).map_err(|_| CryptoError("NIP-44 payload is not base64"))?;
    if data.len() < 99 {
        return Err(CryptoError("NIP-44 payload too short"));
    }
    if data[0] != NIP44_VERSION {
        return Err(CryptoError("unknown NIP-44 version"));
    }
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&data[1..33]);
    let (ciphertext, tag) = data[33..].split_at(data.len() - 33 - 32);
    let keys = message_keys(conversation_key, &nonce)?;
    if !bool::from(mac(&keys, &nonce, ciphertext)?.as_slice().ct_eq(tag)) {
        return Err(CryptoError("NIP-44 MAC does not match"));
    }
    let mut padded = ciphertext.to_vec();
    chacha20(&keys, &mut padded);
    unpad(&padded)
}

fn unpad(padded: &[u8]) -> Result<String, CryptoError> {
    let len = usize::from(u16::from_be_bytes([padded[0], padded[1]]));
    // A zero u16 announces NIP-44's extended prefix: messages longer than
    // coffer accepts.
    if len == 0 || padded.len() != 2 + padded_len(len) {
        return Err(CryptoError("invalid NIP-44 padding"));
    }
    let text = padded.get(2..2 + len).ok_or(CryptoError("invalid NIP-44 padding"))?;
    String::from_utf8(text.to_vec()).map_err(|_| CryptoError("NIP-44 plaintext is not UTF-8"))
}

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

pub fn nip04_encrypt(shared_x: &[u8; 32], plaintext: &str, iv: [u8; 16]) -> Result<String, CryptoError> {
    use cbc::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
    if plaintext.len() > PLAINTEXT_LEN_MAX_BYTES {
        return Err(CryptoError("plaintext length out of range"));
    }
    let ciphertext =
        Aes256CbcEnc::new(&(*shared_x).into(), &iv.into()).encrypt_padded_vec::<Pkcs7>(plaintext.as_bytes());
    Ok(format!("{}?iv={}", STANDARD.encode(ciphertext), STANDARD.encode(iv)))
}

pub fn nip04_decrypt(shared_x: &[u8; 32], content: &str) -> Result<String, CryptoError> {
    use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
    if content.len() > NIP04_CONTENT_LEN_MAX_CHARS {
        return Err(CryptoError("NIP-04 content too long"));
    }
    let (ciphertext, iv) = content.split_once("?iv=").ok_or(CryptoError("NIP-04 content without ?iv="))?;
    let ciphertext = STANDARD.decode(ciphertext).map_err(|_| CryptoError("NIP-04 ciphertext is not base64"))?;
    let iv: [u8; 16] = STANDARD
        .decode(iv)
        .ok()
        .and_then(|iv| iv.try_into().ok())
        .ok_or(CryptoError("NIP-04 IV is not 16 bytes of base64"))?;
    let plaintext = Aes256CbcDec::new(&(*shared_x).into(), &iv.into())
        .decrypt_padded_vec::<Pkcs7>(&ciphertext)
        .map_err(|_| CryptoError("NIP-04 ciphertext does not decrypt"))?;
    String::from_utf8(plaintext).map_err(|_| CryptoError("NIP-04 plaintext is not UTF-8"))
}

#[cfg(test)]
mod tests {
    //! Vectors from the NIP-44 spec and its published vector file
    //! (`nip44.vectors.json`, v2 `valid` and `invalid` sections).
    use super::*;

    fn key32(hex_text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_text, &mut out).unwrap();
        out
    }

    fn secret(hex_text: &str) -> SecretKey {
        SecretKey::from_slice(&key32(hex_text)).unwrap()
    }

    fn xonly(hex_text: &str) -> XOnlyPublicKey {
        XOnlyPublicKey::from_slice(&key32(hex_text)).unwrap()
    }

    fn public_of(sec: &SecretKey) -> XOnlyPublicKey {
        sec.x_only_public_key(&bitcoin::secp256k1::Secp256k1::new()).0
    }

    #[test]
    fn conversation_keys_match_the_vectors() {
        let cases = [
            (
                "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364139",
                "0000000000000000000000000000000000000000000000000000000000000002",
                "8b6392dbf2ec6a2b2d5b1477fc2be84d63ef254b667cadd31bd3f444c44ae6ba",
            ),
            (
                "0000000000000000000000000000000000000000000000000000000000000002",
                "1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdeb",
                "be234f46f60a250bef52a5ee34c758800c4ca8e5030bf4cc1a31d37ba2104d43",
            ),
        ];
        for (sec1, pub2, expected) in cases {
            let conversation = Conversation::new(&secret(sec1), &xonly(pub2));
            assert_eq!(hex::encode(conversation.nip44_key()), expected);
        }
    }

    #[test]
    fn encryption_with_a_fixed_nonce_matches_the_vectors_and_decrypts_both_ways() {
        let cases = [
            (
                "0000000000000000000000000000000000000000000000000000000000000001",
                "0000000000000000000000000000000000000000000000000000000000000002",
                "c41c775356fd92eadc63ff5a0dc1da211b268cbea22316767095b2871ea1412d",
                "0000000000000000000000000000000000000000000000000000000000000001",
                "a",
                "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABee0G5VSK0/9YypIObAtDKfYEAjD35uVkHyB0F4DwrcNaCXlCWZKaArsGrY6M9wnuTMxWfp1RTN9Xga8no+kF5Vsb",
            ),
            (
                "5c0c523f52a5b6fad39ed2403092df8cebc36318b39383bca6c00808626fab3a",
                "4b22aa260e4acb7021e32f38a6cdf4b673c6a277755bfce287e370c924dc936d",
                "3e2b52a63be47d34fe0a80e34e73d436d6963bc8f39827f327057a9986c20a45",
                "b635236c42db20f021bb8d1cdff5ca75dd1a0cc72ea742ad750f33010b24f73b",
                "表ポあA鷗ŒéＢ逍Üßªąñ丂㐀𠀀",
                "ArY1I2xC2yDwIbuNHN/1ynXdGgzHLqdCrXUPMwELJPc7s7JqlCMJBAIIjfkpHReBPXeoMCyuClwgbT419jUWU1PwaNl4FEQYKCDKVJz+97Mp3K+Q2YGa77B6gpxB/lr1QgoqpDf7wDVrDmOqGoiPjWDqy8KzLueKDcm9BVP8xeTJIxs=",
            ),
        ];
        for (sec1, sec2, conversation_key, nonce, plaintext, payload) in cases {
            let (sec1, sec2) = (secret(sec1), secret(sec2));
            let ours = Conversation::new(&sec1, &public_of(&sec2));
            let theirs = Conversation::new(&sec2, &public_of(&sec1));
            assert_eq!(hex::encode(ours.nip44_key()), conversation_key);
            assert_eq!(ours.nip44_key(), theirs.nip44_key(), "conv(a, B) == conv(b, A)");
            assert_eq!(nip44_encrypt(&ours.nip44_key(), plaintext, key32(nonce)).unwrap(), payload);
            assert_eq!(theirs.decrypt(Encryption::Nip44V2, payload).unwrap(), plaintext);
        }
    }

    #[test]
    fn padding_matches_the_vectors() {
        let cases = [
            (16, 32),
            (32, 32),
            (33, 64),
            (37, 64),
            (64, 64),
            (65, 96),
            (100, 128),
            (200, 224),
            (250, 256),
            (320, 320),
            (383, 384),
            (384, 384),
            (400, 448),
            (515, 640),
            (900, 1024),
            (1020, 1024),
            (65_536, 65_536),
        ];
        for (unpadded, padded) in cases {
            assert_eq!(padded_len(unpadded), padded, "length {unpadded}");
        }
    }

    #[test]
    fn bad_payloads_are_refused_without_panics() {
        let cases = [
            (
                "ca2527a037347b91bea0c8a30fc8d9600ffd81ec00038671e3a0f0cb0fc9f642",
                "#Atqupco0WyaOW2IGDKcshwxI9xO8HgD/P8Ddt46CbxDbrhdG8VmJdU0MIDf06CUvEvdnr1cp1fiMtlM/GrE92xAc1K5odTpCzUB+mjXgbaqtntBUbTToSUoT0ovrlPwzGjyp",
                "unknown NIP-44 encoding version",
            ),
            (
                "cff7bd6a3e29a450fd27f6c125d5edeb0987c475fd1e8d97591e0d4d8a89763c",
                "Agn/l3ULCEAS4V7LhGFM6IGA17jsDUaFCKhrbXDANholyySBfeh+EN8wNB9gaLlg4j6wdBYh+3oK+mnxWu3NKRbSvQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "NIP-44 MAC does not match",
            ),
            (
                "5254827d29177622d40a7b67cad014fe7137700c3c523903ebbe3e1b74d40214",
                "Anq2XbuLvCuONcr7V0UxTh8FAyWoZNEdBHXvdbNmDZHB573MI7R7rrTYftpqmvUpahmBC2sngmI14/L0HjOZ7lWGJlzdh6luiOnGPc46cGxf08MRC4CIuxx3i2Lm0KqgJ7vA",
                "invalid NIP-44 padding",
            ),
            (
                "36f04e558af246352dcf73b692fbd3646a2207bd8abd4b1cd26b234db84d9481",
                "AK1AjUvoYW3IS7C/BGRUoqEC7ayTfDUgnEPNeWTF/reBZFaha6EAIRueE9D1B1RuoiuFScC0Q94yjIuxZD3JStQtE8JMNacWFs9rlYP+ZydtHhRucp+lxfdvFlaGV/sQlqZz",
                "unknown NIP-44 version",
            ),
        ];
        for (key, payload, why) in cases {
            assert_eq!(nip44_decrypt(&key32(key), payload), Err(CryptoError(why)));
        }
        for junk in ["", "A", "????", &"A".repeat(200), &"é".repeat(100)] {
            assert!(nip44_decrypt(&[7; 32], junk).is_err());
            assert!(nip04_decrypt(&[7; 32], junk).is_err());
        }
        assert!(nip44_encrypt(&[7; 32], "", [0; 32]).is_err(), "an empty message is not allowed");
    }

    #[test]
    fn nip04_round_trips_and_refuses_a_wrong_key() {
        let (a, b) = (secret(&"11".repeat(32)), secret(&"22".repeat(32)));
        let ours = Conversation::new(&a, &public_of(&b));
        let theirs = Conversation::new(&b, &public_of(&a));
        let content = ours.encrypt(Encryption::Nip04, r#"{"method":"get_balance","params":{}}"#).unwrap();
        assert!(content.contains("?iv="), "{content}");
        assert_eq!(theirs.decrypt(Encryption::Nip04, &content).unwrap(), r#"{"method":"get_balance","params":{}}"#);
        let stranger = Conversation::new(&secret(&"33".repeat(32)), &public_of(&a));
        let plaintext = r#"{"method":"get_balance","params":{}}"#;
        assert_ne!(stranger.decrypt(Encryption::Nip04, &content).ok().as_deref(), Some(plaintext));
    }
}
