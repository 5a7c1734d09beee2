declare module "bs58" { const bs58: { encode(bytes: Uint8Array | number[]): string; decode(text: string): Buffer }; export default bs58; }
