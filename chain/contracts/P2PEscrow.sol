// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ArbitratorPool} from "./ArbitratorPool.sol";

/// @title P2PEscrow
/// @notice ERC20 escrow for peer-to-peer trades. The buyer locks tokens, the seller delivers
///         off-chain and marks the order delivered, the buyer confirms and the seller is paid
///         minus the platform fee. Disputes go to an arbitrator drawn from the ArbitratorPool;
///         the owner resolves disputes whose arbitrator missed the dispute deadline.
/// @dev Order lifecycle (uint8 values are relied upon off-chain):
///      None(0) -> Funded(1) -> Delivered(2) -> Completed(3)
///      Funded/Delivered -> Disputed(4) -> ResolvedBuyer(5) | ResolvedSeller(6)
///      Funded -> Cancelled(7) (seller declines) | Expired(8) (seller deadline passed)
contract P2PEscrow is Ownable, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    enum Status {
        None,
        Funded,
        Delivered,
        Completed,
        Disputed,
        ResolvedBuyer,
        ResolvedSeller,
        Cancelled,
        Expired
    }

    struct Order {
        address buyer;
        address seller;
        address token;
        uint256 amount;
        uint256 platformFee;
        address arbitrator;
        uint64 createdAt;
        uint64 sellerDeadline;
        uint64 buyerDeadline;
        uint64 disputeDeadline;
        Status status;
    }

    uint16 public constant BPS_DENOMINATOR = 10_000;
    uint16 public constant MAX_PLATFORM_FEE_BPS = 1_000;

    mapping(uint256 => Order) public orders;
    uint256 public nextOrderId = 1;

    address public treasury;
    ArbitratorPool public arbitratorPool;
    mapping(address => bool) public supportedTokens;

    uint16 public platformFeeBps = 100;
    /// @notice Share of the platform fee paid to the arbitrator who resolves a dispute.
    uint16 public arbitratorFeeBps = 5_000;
    uint64 public sellerTimeout = 1 days;
    uint64 public buyerTimeout = 3 days;
    uint64 public disputeTimeout = 3 days;

    // ------------------------------------------------------------------ events

    event OrderCreated(
        uint256 indexed orderId,
        address indexed buyer,
        address indexed seller,
        address token,
        uint256 amount,
        uint256 platformFee,
        uint64 sellerDeadline
    );
    event OrderDelivered(uint256 indexed orderId, uint64 buyerDeadline);
    event OrderCompleted(uint256 indexed orderId, uint256 sellerAmount, uint256 platformFee);
    event OrderCancelled(uint256 indexed orderId, address indexed cancelledBy);
    event OrderDisputed(
        uint256 indexed orderId,
        address indexed openedBy,
        address indexed arbitrator,
        uint64 disputeDeadline,
        string evidenceCid
    );
    event EvidenceSubmitted(uint256 indexed orderId, address indexed submittedBy, string cid);
    /// @dev buyerAmount + sellerAmount + feeAmount == order.amount; feeAmount is everything
    ///      withheld from the parties (treasury share + arbitrator fee).
    event DisputeResolved(
        uint256 indexed orderId,
        address indexed resolver,
        bool favorBuyer,
        bool byOwner,
        uint256 buyerAmount,
        uint256 sellerAmount,
        uint256 feeAmount
    );
    event OrderExpired(uint256 indexed orderId, uint256 refundAmount);
    event OrderAutoReleased(uint256 indexed orderId);
    event SupportedTokenSet(address indexed token, bool supported);
    event TreasuryUpdated(address indexed oldTreasury, address indexed newTreasury);
    event PlatformFeeUpdated(uint16 oldBps, uint16 newBps);
    event ArbitratorFeeUpdated(uint16 oldBps, uint16 newBps);
    event TimeoutsUpdated(uint64 sellerTimeout, uint64 buyerTimeout, uint64 disputeTimeout);

    // ------------------------------------------------------------------ errors

    error ZeroAddress();
    error TokenNotSupported(address token);
    error InvalidAmount();
    error InvalidSeller();
    error NotBuyer();
    error NotSeller();
    error NotParty();
    error NotArbitrator();
    error InvalidStatus(uint8 current);
    error DeadlineNotReached(uint64 deadline);
    error DeadlinePassed(uint64 deadline);
    error DisputeDeadlineNotReached();
    error FeeTooHigh(uint16 bps, uint16 maxBps);
    error InvalidTimeout();

    constructor(address treasury_, address arbitratorPool_, address initialOwner) Ownable(initialOwner) {
        if (treasury_ == address(0) || arbitratorPool_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        arbitratorPool = ArbitratorPool(arbitratorPool_);
    }

    // ------------------------------------------------------------ order flow

    function createOrder(address seller, address token, uint256 amount)
        external
        whenNotPaused
        nonReentrant
        returns (uint256 orderId)
    {
        if (!supportedTokens[token]) revert TokenNotSupported(token);
        if (amount == 0) revert InvalidAmount();
        if (seller == address(0) || seller == msg.sender) revert InvalidSeller();

        orderId = nextOrderId++;
        uint256 fee = (amount * platformFeeBps) / BPS_DENOMINATOR;
        uint64 sellerDeadline = uint64(block.timestamp) + sellerTimeout;

        Order storage o = orders[orderId];
        o.buyer = msg.sender;
        o.seller = seller;
        o.token = token;
        o.amount = amount;
        o.platformFee = fee;
        o.createdAt = uint64(block.timestamp);
        o.sellerDeadline = sellerDeadline;
        o.status = Status.Funded;

        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        emit OrderCreated(orderId, msg.sender, seller, token, amount, fee, sellerDeadline);
    }

    /// @notice Seller confirms delivery; must happen before the seller deadline.
    function markDelivered(uint256 orderId) external whenNotPaused nonReentrant {
        Order storage o = orders[orderId];
        if (msg.sender != o.seller) revert NotSeller();
        _requireStatus(o, Status.Funded);
        if (block.timestamp > o.sellerDeadline) revert DeadlinePassed(o.sellerDeadline);

        uint64 buyerDeadline = uint64(block.timestamp) + buyerTimeout;
        o.buyerDeadline = buyerDeadline;
        o.status = Status.Delivered;
        emit OrderDelivered(orderId, buyerDeadline);
    }

    function confirmReceipt(uint256 orderId) external whenNotPaused nonReentrant {
        Order storage o = orders[orderId];
        if (msg.sender != o.buyer) revert NotBuyer();
        _requireStatus(o, Status.Delivered);
        _complete(orderId, o);
    }

    /// @notice Seller declines a funded order; the buyer is refunded in full.
    function cancelOrder(uint256 orderId) external whenNotPaused nonReentrant {
        Order storage o = orders[orderId];
        if (msg.sender != o.seller) revert NotSeller();
        _requireStatus(o, Status.Funded);

        o.status = Status.Cancelled;
        _pay(o.token, o.buyer, o.amount);
        emit OrderCancelled(orderId, msg.sender);
    }

    /// @notice Either party escalates a Funded order (before the seller deadline) or a Delivered
    ///         order (before the buyer deadline) to an arbitrator.
    function openDispute(uint256 orderId, string calldata evidenceCid) external whenNotPaused nonReentrant {
        Order storage o = orders[orderId];
        if (msg.sender != o.buyer && msg.sender != o.seller) revert NotParty();
        if (o.status == Status.Funded) {
            if (block.timestamp > o.sellerDeadline) revert DeadlinePassed(o.sellerDeadline);
        } else if (o.status == Status.Delivered) {
            if (block.timestamp > o.buyerDeadline) revert DeadlinePassed(o.buyerDeadline);
        } else {
            revert InvalidStatus(uint8(o.status));
        }

        o.status = Status.Disputed;
        uint64 disputeDeadline = uint64(block.timestamp) + disputeTimeout;
        o.disputeDeadline = disputeDeadline;
        address arbitrator = arbitratorPool.assignArbitrator(orderId, o.buyer, o.seller);
        o.arbitrator = arbitrator;
        emit OrderDisputed(orderId, msg.sender, arbitrator, disputeDeadline, evidenceCid);
    }

    function submitEvidence(uint256 orderId, string calldata cid) external whenNotPaused {
        Order storage o = orders[orderId];
        if (msg.sender != o.buyer && msg.sender != o.seller) revert NotParty();
        _requireStatus(o, Status.Disputed);
        emit EvidenceSubmitted(orderId, msg.sender, cid);
    }

    /// @notice The assigned arbitrator decides. The arbitrator fee (a share of the platform fee)
    ///         is taken from the buyer's refund or from the platform fee respectively.
    function resolveDispute(uint256 orderId, bool favorBuyer) external whenNotPaused nonReentrant {
        Order storage o = orders[orderId];
        if (msg.sender != o.arbitrator) revert NotArbitrator();
        _requireStatus(o, Status.Disputed);
        _resolve(orderId, o, favorBuyer, false);
    }

    /// @notice Owner fallback once the arbitrator missed the dispute deadline. No arbitrator fee
    ///         is paid and the arbitrator is penalized. Works while paused.
    function ownerResolveDispute(uint256 orderId, bool favorBuyer) external onlyOwner nonReentrant {
        Order storage o = orders[orderId];
        _requireStatus(o, Status.Disputed);
        if (block.timestamp <= o.disputeDeadline) revert DisputeDeadlineNotReached();
        _resolve(orderId, o, favorBuyer, true);
    }

    /// @notice Refund the buyer of a Funded order whose seller deadline has passed. Callable by anyone.
    function autoExpireOrder(uint256 orderId) external whenNotPaused nonReentrant {
        Order storage o = orders[orderId];
        _requireStatus(o, Status.Funded);
        if (block.timestamp <= o.sellerDeadline) revert DeadlineNotReached(o.sellerDeadline);

        o.status = Status.Expired;
        _pay(o.token, o.buyer, o.amount);
        emit OrderExpired(orderId, o.amount);
    }

    /// @notice Pay the seller of a Delivered order whose buyer deadline has passed. Callable by anyone.
    function autoReleaseToSeller(uint256 orderId) external whenNotPaused nonReentrant {
        Order storage o = orders[orderId];
        _requireStatus(o, Status.Delivered);
        if (block.timestamp <= o.buyerDeadline) revert DeadlineNotReached(o.buyerDeadline);

        emit OrderAutoReleased(orderId);
        _complete(orderId, o);
    }

    // ------------------------------------------------------------------ owner

    function pause() external onlyOwner {
        _pause();
    }

    function unpause() external onlyOwner {
        _unpause();
    }

    function setSupportedToken(address token, bool supported) external onlyOwner {
        if (token == address(0)) revert ZeroAddress();
        supportedTokens[token] = supported;
        emit SupportedTokenSet(token, supported);
    }

    function setTreasury(address newTreasury) external onlyOwner {
        if (newTreasury == address(0)) revert ZeroAddress();
        address old = treasury;
        treasury = newTreasury;
        emit TreasuryUpdated(old, newTreasury);
    }

    /// @notice Applies to orders created afterwards; existing orders keep their fee.
    function setPlatformFeeBps(uint16 newBps) external onlyOwner {
        if (newBps > MAX_PLATFORM_FEE_BPS) revert FeeTooHigh(newBps, MAX_PLATFORM_FEE_BPS);
        uint16 old = platformFeeBps;
        platformFeeBps = newBps;
        emit PlatformFeeUpdated(old, newBps);
    }

    function setArbitratorFeeBps(uint16 newBps) external onlyOwner {
        if (newBps > BPS_DENOMINATOR) revert FeeTooHigh(newBps, BPS_DENOMINATOR);
        uint16 old = arbitratorFeeBps;
        arbitratorFeeBps = newBps;
        emit ArbitratorFeeUpdated(old, newBps);
    }

    /// @notice Applies to deadlines set afterwards; existing deadlines are unchanged.
    function setTimeouts(uint64 seller, uint64 buyer, uint64 dispute) external onlyOwner {
        if (seller == 0 || buyer == 0 || dispute == 0) revert InvalidTimeout();
        sellerTimeout = seller;
        buyerTimeout = buyer;
        disputeTimeout = dispute;
        emit TimeoutsUpdated(seller, buyer, dispute);
    }

    // ---------------------------------------------------------------- internal

    function _requireStatus(Order storage o, Status expected) private view {
        if (o.status != expected) revert InvalidStatus(uint8(o.status));
    }

    function _complete(uint256 orderId, Order storage o) private {
        o.status = Status.Completed;
        uint256 fee = o.platformFee;
        uint256 sellerAmount = o.amount - fee;
        _pay(o.token, o.seller, sellerAmount);
        _pay(o.token, treasury, fee);
        emit OrderCompleted(orderId, sellerAmount, fee);
    }

    function _resolve(uint256 orderId, Order storage o, bool favorBuyer, bool byOwner) private {
        uint256 amount = o.amount;
        uint256 fee = o.platformFee;
        uint256 arbitratorFee = byOwner ? 0 : (fee * arbitratorFeeBps) / BPS_DENOMINATOR;
        uint256 buyerAmount;
        uint256 sellerAmount;

        if (favorBuyer) {
            o.status = Status.ResolvedBuyer;
            buyerAmount = amount - arbitratorFee;
            _pay(o.token, o.buyer, buyerAmount);
        } else {
            o.status = Status.ResolvedSeller;
            sellerAmount = amount - fee;
            _pay(o.token, o.seller, sellerAmount);
            _pay(o.token, treasury, fee - arbitratorFee);
        }

        address arbitrator = o.arbitrator;
        if (byOwner) {
            arbitratorPool.penalize(arbitrator, orderId);
        } else {
            _pay(o.token, arbitrator, arbitratorFee);
            arbitratorPool.recordResolution(arbitrator, orderId, arbitratorFee);
        }

        emit DisputeResolved(
            orderId, msg.sender, favorBuyer, byOwner, buyerAmount, sellerAmount, amount - buyerAmount - sellerAmount
        );
    }

    function _pay(address token, address to, uint256 amount) private {
        if (amount != 0) IERC20(token).safeTransfer(to, amount);
    }
}
