import type { FailedTransactionMetadata } from "litesvm";

// litesvm reports errors as classes and numeric enums; Solana RPC clients
// expect the JSON the validator gives, e.g. {"InstructionError":[0,{"Custom":1}]}.
// The names are listed in the enums' order (litesvm 0.8.0 internal.d.ts).

const TRANSACTION_ERRORS = ["AccountInUse", "AccountLoadedTwice", "AccountNotFound", "ProgramAccountNotFound", "InsufficientFundsForFee", "InvalidAccountForFee", "AlreadyProcessed", "BlockhashNotFound", "CallChainTooDeep", "MissingSignatureForFee", "InvalidAccountIndex", "SignatureFailure", "InvalidProgramForExecution", "SanitizeFailure", "ClusterMaintenance", "AccountBorrowOutstanding", "WouldExceedMaxBlockCostLimit", "UnsupportedVersion", "InvalidWritableAccount", "WouldExceedMaxAccountCostLimit", "WouldExceedAccountDataBlockLimit", "TooManyAccountLocks", "AddressLookupTableNotFound", "InvalidAddressLookupTableOwner", "InvalidAddressLookupTableData", "InvalidAddressLookupTableIndex", "InvalidRentPayingAccount", "WouldExceedMaxVoteCostLimit", "WouldExceedAccountDataTotalLimit", "MaxLoadedAccountsDataSizeExceeded", "ResanitizationNeeded", "InvalidLoadedAccountsDataSizeLimit", "UnbalancedTransaction", "ProgramCacheHitMaxLimit", "CommitCancelled"];
const INSTRUCTION_ERRORS = ["GenericError", "InvalidArgument", "InvalidInstructionData", "InvalidAccountData", "AccountDataTooSmall", "InsufficientFunds", "IncorrectProgramId", "MissingRequiredSignature", "AccountAlreadyInitialized", "UninitializedAccount", "UnbalancedInstruction", "ModifiedProgramId", "ExternalAccountLamportSpend", "ExternalAccountDataModified", "ReadonlyLamportChange", "ReadonlyDataModified", "DuplicateAccountIndex", "ExecutableModified", "RentEpochModified", "NotEnoughAccountKeys", "AccountDataSizeChanged", "AccountNotExecutable", "AccountBorrowFailed", "AccountBorrowOutstanding", "DuplicateAccountOutOfSync", "InvalidError", "ExecutableDataModified", "ExecutableLamportChange", "ExecutableAccountNotRentExempt", "UnsupportedProgramId", "CallDepth", "MissingAccount", "ReentrancyNotAllowed", "MaxSeedLengthExceeded", "InvalidSeeds", "InvalidRealloc", "ComputationalBudgetExceeded", "PrivilegeEscalation", "ProgramEnvironmentSetupFailure", "ProgramFailedToComplete", "ProgramFailedToCompile", "Immutable", "IncorrectAuthority", "AccountNotRentExempt", "InvalidAccountOwner", "ArithmeticOverflow", "UnsupportedSysvar", "IllegalOwner", "MaxAccountsDataAllocationsExceeded", "MaxAccountsExceeded", "MaxInstructionTraceLengthExceeded", "BuiltinProgramsMustConsumeComputeUnits", "BorshIoError"];

// The error classes are not exported by litesvm's entry point, so they are
// told apart by class name.
type Shape = { constructor: { name: string }; index?: number; accountIndex?: number; code?: number; err?: () => unknown };

export function rpcError(failed: FailedTransactionMetadata): unknown {
  const err = failed.err() as number | Shape;
  if (typeof err === "number") return TRANSACTION_ERRORS[err] ?? `TransactionError${err}`;
  switch (err.constructor.name) {
    case "TransactionErrorInstructionError": {
      const inner = err.err!() as number | Shape;
      let ix: unknown;
      if (typeof inner === "number") ix = INSTRUCTION_ERRORS[inner] ?? `InstructionError${inner}`;
      else if (inner.constructor.name === "InstructionErrorCustom") ix = { Custom: inner.code };
      else ix = { BorshIoError: String(inner) };
      return { InstructionError: [err.index, ix] };
    }
    case "TransactionErrorDuplicateInstruction": return { DuplicateInstruction: err.index };
    case "TransactionErrorInsufficientFundsForRent": return { InsufficientFundsForRent: { account_index: err.accountIndex } };
    default: return String(err);
  }
}
